"""Policies: for a stage and a state, candidate actions with probabilities.

`base` is the interface every policy implements; `embedded` (with its `reader`) is the default;
`chat_model` and `transformers_lm` put a language model behind the same interface; `head` and
`trainable` are what policy training updates.
"""
