"""The agent: a LangGraph graph of retrieve -> extract -> synthesize, and the search that uses step scores.

`state` holds the plain-typed graph state; `nodes` the node functions (with backtracking); `graph`
compiles them (`build_agent`); `best_of_n` samples N trajectories and keeps one; `chat_session` is the
interactive agent behind `reasonrag chat`.
"""
