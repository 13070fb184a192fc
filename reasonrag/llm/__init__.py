"""Language models by name (`provider:model`, `hf:PATH`) and the tagged replies they write.

Shared by the LLM policies (`reasonrag.policies`) and the LLM judge (`reasonrag.prm`), so neither imports
the other.
"""
