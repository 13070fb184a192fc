"""Retrieval: the sentence encoder, the FAISS index on disk, and retrievers (ours and LangChain's)."""
