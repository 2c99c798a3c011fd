"""Flow cytometry: FCS reading, compensation, transforms, gating strategies, the gate engine and
population statistics. Each module is one stage; see ``immunoprofile.flow.gates`` for the shared
strategy model."""
