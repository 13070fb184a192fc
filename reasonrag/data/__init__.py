"""Data: the plain types, corpora and questions, outcome rewards, and safe artifact files.

The bottom room: everything else reads these, and they import nothing of reasonrag but `errors`.
"""
