"""Process reward models: per-step scores in [0, 1] for whole trajectories, one head per stage.

`base` is the interface; `encoder_prm`, `transformers_prm` and `judge` implement it; `loading` opens a
saved PRM by its manifest; `evaluation` measures one against MC labels and gold evidence.
"""
