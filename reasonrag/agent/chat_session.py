"""`reasonrag chat`: the interactive, self-correcting agent in a terminal.

Each step streams as it is made (LangGraph's custom stream mode) with its stage and PRM score; the agent
backtracks on its own and says why; the user can reject a step (a forced backtrack from it), inspect the
evidence, list the path, and go back to any earlier step (time travel: the fork keeps every checkpoint).
Sessions live in SQLite (`langgraph-checkpoint-sqlite`): one thread per question, `"{session}/{n}"`,
because the state's list reducers would otherwise pile one question's steps onto the last one's.
`ChatSession` does the work and returns or prints text, so it is testable without a terminal.
"""

from __future__ import annotations

import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from reasonrag.agent.state import USER_REASON
from reasonrag.data.terminal import terminal_text
from reasonrag.errors import InputError, ReasonRAGError

if TYPE_CHECKING:
    from reasonrag.agent.nodes import AgentSteps

PROMPT = "reasonrag> "
SESSIONS_TABLE = "reasonrag_chat_questions"

HELP = """\
Type a question to ask it; lines starting with / are commands:
  /steps        the current question's path: step numbers, stages, scores, alternatives left,
                and the branches abandoned on the way
  /evidence     the sentences kept as evidence, with their passage titles, and what was retrieved
  /reject N     reject step N: go back to its branch point, take its next-best untried action, go on
  /back N       time travel: return to just after step N (later steps stay in the history);
                /continue or /reject then works from there
  /continue     go on from where the agent stands (after /back N or an interrupted run)
  /history      the questions of this session and their answers
  /sessions     the sessions saved in this database
  /help         this list
  /quit         leave (so does Ctrl-D); the session is saved: resume it with --session ID"""


def _clip(text: Any, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _clip_middle(text: Any, n: int) -> str:
    """Its start and its end: later-hop queries differ at the end (the title they add), not the start."""
    text = " ".join(str(text).split())
    if len(text) <= n:
        return text
    head = (n - 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (n - 1 - head) :]


def _titles(items: list[dict]) -> str:
    return ", ".join(dict.fromkeys(str(i.get("title", "")) for i in items)) or "-"


def step_line(number: int, step: Mapping[str, Any]) -> str:
    """One readable line for a step: its number, hop, stage, what it did, its probability and score."""
    from reasonrag.agent.state import NOT_ENOUGH_EVIDENCE

    stage, obs = step["stage"], step.get("observation")
    if stage == "retrieve":
        obs = obs or []
        what = (
            f"search {_clip_middle(step['action'], 70)!r} -> {len(obs)} passage(s): {_clip(_titles(obs), 70)}"
        )
    elif stage == "extract":
        obs = obs or []
        what = f"keep {len(obs)} sentence(s) from {_clip(_titles(obs), 70)}" if obs else "keep nothing"
    elif obs == "another hop":
        what = "another hop needed"
    elif obs == NOT_ENOUGH_EVIDENCE:
        what = "give up: not enough evidence"
    else:
        what = f"answer {_clip(obs, 80)!r}"
    score = "" if step.get("score") is None else f"  score {step['score']:.2f}"
    return f"{number:>3}. hop {int(step.get('hop', 0)) + 1}  {stage:<10} {what}  (p={step.get('prob', 1.0):.2f}){score}"


def backtrack_line(event: Mapping[str, Any]) -> str:
    """A backtrack, and why."""
    return (
        f"  <- backtrack to step {event['to_step']} ({event['stage']}): {event['reason']}; "
        f"now trying {_clip_middle(event['now_trying'], 80)!r}"
    )


def _thread(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id}}


class ChatSession:
    """One chat session over a SQLite file: ask questions, reject steps, travel back, resume later.

    Methods print what the user sees to `out` and raise `InputError` for misuse (a bad step number, no
    question yet); `handle(line)` turns those into one printed line, as the terminal loop needs.
    """

    def __init__(
        self,
        nodes: AgentSteps,
        db: str | Path,
        session: str | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        out: TextIO | None = None,
    ) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        from reasonrag.agent.graph import compile_steps
        from reasonrag.agent.state import MAX_BACKTRACKS_BOUND, recursion_limit

        self.nodes = nodes
        self.out = out or sys.stdout
        self.inputs = {"max_hops": self.nodes.max_hops, "k": self.nodes.k, **dict(inputs or {})}
        self.db = Path(db)
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.db), check_same_thread=False)
        self.saver = SqliteSaver(self.conn)
        try:
            with self.saver.lock:
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {SESSIONS_TABLE} (session_id TEXT NOT NULL, "
                    "n INTEGER NOT NULL, thread_id TEXT NOT NULL, question TEXT NOT NULL, "
                    "asked_at REAL NOT NULL, PRIMARY KEY (session_id, n))"
                )
                self.conn.commit()
                # A file damaged inside (not only in its header) fails here, not later mid-question.
                problems = [row[0] for row in self.conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise InputError(
                f"{self.db}: cannot hold chat sessions ({exc}); give another file with --db"
            ) from None
        if problems != ["ok"]:
            self.conn.close()
            detail = "; ".join(" ".join(str(p).split()) for p in problems[:2])
            raise InputError(
                f"{self.db}: the sessions database is damaged ({detail}); "
                "move it away or give another file with --db"
            )
        self.graph = compile_steps(self.nodes, self.saver)
        cfg = self.nodes.backtrack_config
        bound = max(MAX_BACKTRACKS_BOUND, cfg.max_backtracks if cfg else 0)
        self.recursion_limit = recursion_limit(int(self.inputs["max_hops"]), bound)
        self.resumed = session is not None and bool(self._rows(session))
        self.session = session or self._new_id()
        rows = self._rows(self.session)
        self.thread: str | None = rows[-1]["thread_id"] if rows else None
        self.pointer: dict | None = _thread(self.thread) if self.thread else None  # the checkpoint shown

    # -- storage -----------------------------------------------------------------------------------------
    def _rows(self, session: str) -> list[dict]:
        with self.saver.lock:
            cur = self.conn.execute(
                f"SELECT n, thread_id, question, asked_at FROM {SESSIONS_TABLE} WHERE session_id = ? ORDER BY n",
                (session,),
            )
            return [dict(zip(("n", "thread_id", "question", "asked_at"), r)) for r in cur.fetchall()]

    def _new_id(self) -> str:
        while True:
            sid = uuid.uuid4().hex[:8]
            if not self._rows(sid):
                return sid

    def sessions(self) -> list[dict]:
        """Every session in the database: id, number of questions, the last question and when."""
        with self.saver.lock:
            cur = self.conn.execute(
                f"SELECT session_id, COUNT(*), MAX(asked_at) FROM {SESSIONS_TABLE} GROUP BY session_id "
                "ORDER BY MAX(asked_at) DESC"
            )
            rows = cur.fetchall()
        out = []
        for sid, count, last in rows:
            out.append(
                {"session": sid, "questions": count, "last": self._rows(sid)[-1]["question"], "at": last}
            )
        return out

    def history(self) -> list[dict]:
        """The questions of this session, in order, each with its thread and its latest answer."""
        out = []
        for row in self._rows(self.session):
            values = self.graph.get_state(_thread(row["thread_id"])).values
            out.append(
                {
                    **row,
                    "answer": values.get("answer", ""),
                    "status": values.get("status", "running"),
                    "steps": len(values.get("steps") or []),
                    "backtracks": values.get("backtracks", 0),
                }
            )
        return out

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- output ------------------------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        """Print for the person at the terminal: no control or bidi character from a passage gets through."""
        print(terminal_text(text, keep_newlines=True), file=self.out, flush=True)

    @property
    def scored(self) -> bool:
        return self.nodes.scorer is not None

    def _snapshot(self):
        if self.pointer is None:
            raise InputError("no question yet: type one first")
        return self.graph.get_state(self.pointer)

    @property
    def state(self) -> dict:
        """The values of the checkpoint the session stands on (empty before the first question)."""
        return dict(self._snapshot().values) if self.pointer is not None else {}

    def _alternatives(self, branch: Mapping[str, Any]) -> int:
        floor = self.nodes.backtrack_config.min_prob if self.nodes.backtrack_config else 0.0
        return sum(
            1 for j, c in enumerate(branch["candidates"]) if j not in branch["tried"] and c["prob"] >= floor
        )

    # -- running the graph -------------------------------------------------------------------------------
    def _run(self, inputs: dict | None, config: dict, first_step: int) -> dict:
        """Stream a run (new, resumed or forked), one line per step and per backtrack, then the answer."""
        number, interrupted = first_step, False
        try:
            for chunk in self.graph.stream(
                inputs, {**config, "recursion_limit": self.recursion_limit}, stream_mode="custom"
            ):
                if "step" in chunk:
                    number += 1
                    self.say(step_line(number, chunk["step"]))
                elif "backtrack" in chunk:
                    number = chunk["backtrack"]["to_step"] - 1
                    self.say(backtrack_line(chunk["backtrack"]))
        except KeyboardInterrupt:
            interrupted = True
            self.say(
                "\ninterrupted: /continue goes on from the last step saved, /steps shows where it stopped"
            )
        snap = self.graph.get_state(_thread(self.thread))
        self.pointer = snap.config
        if not snap.next and not interrupted:
            self.say(self._answer_line(snap.values))
        return dict(snap.values)

    def _answer_line(self, values: Mapping[str, Any]) -> str:
        steps = values.get("steps") or []
        bits = [f"{len(steps)} steps", f"{values.get('backtracks', 0)} backtrack(s)"]
        if values.get("path_score") is not None:
            bits.insert(0, f"path score {values['path_score']:.2f}")
        line = f"Answer: {values.get('answer', '')}   ({', '.join(bits)})"
        if values.get("selected_from") not in (None, "path"):
            line += (
                f"\n(the path scored below the threshold and no backtrack was left: "
                f"kept the answer of the {values['selected_from']})"
            )
        return line

    def ask(self, question: str) -> dict:
        """Answer a new question in its own thread, streaming every step."""
        question = question.strip()
        if not question:
            raise InputError("the question is empty")
        with self.saver.lock:
            # One statement numbers and stores the question, so another chat process asking in the same
            # session at the same moment gets the next number rather than a clash.
            cur = self.conn.execute(
                f"INSERT INTO {SESSIONS_TABLE} SELECT ?1, COALESCE(MAX(n), 0) + 1, "
                f"?1 || '/' || (COALESCE(MAX(n), 0) + 1), ?2, ?3 FROM {SESSIONS_TABLE} WHERE session_id = ?1",
                (self.session, question, time.time()),
            )
            self.conn.commit()
            (self.thread,) = self.conn.execute(
                f"SELECT thread_id FROM {SESSIONS_TABLE} WHERE rowid = ?", (cur.lastrowid,)
            ).fetchone()
        self.pointer = _thread(self.thread)
        return self._run({"question": question, **self.inputs}, _thread(self.thread), 0)

    def reject(self, number: int) -> dict:
        """Force a backtrack at step `number` (from 1): its branch point's next-best untried action."""
        if self.nodes.backtrack_config is None:
            raise InputError(
                "/reject needs step scores, and no PRM is loaded (drop --no-prm or give --prm DIR)"
            )
        snap = self._snapshot()
        steps = snap.values.get("steps") or []
        self._check_step(number, steps)
        branches = snap.values.get("branches") or []
        if len(branches) != len(steps):
            raise InputError("this question was answered without step scores, so it has no branch points")
        branch = branches[number - 1]
        if not self._alternatives(branch):
            raise InputError(
                f"step {number} ({branch['stage']}) has no untried alternative: every other action the "
                f"policy proposed there was tried or is too unlikely; /steps shows which steps have some"
            )
        update = self.nodes.backtrack(snap.values, branch_index=number - 1, reason=USER_REASON)
        config = self.graph.update_state(snap.config, update, as_node="backtrack")
        self.say(backtrack_line(update["trace"][0]))
        return self._run(None, config, number - 1)

    def back(self, number: int) -> dict:
        """Stand on the checkpoint just after step `number` of the current path; later ones stay saved."""
        snap = self._snapshot()
        steps = snap.values.get("steps") or []
        self._check_step(number, steps)
        want = steps[:number]
        by_id = {
            s.config["configurable"]["checkpoint_id"]: s
            for s in self.graph.get_state_history(_thread(self.thread))
        }
        found, cur = None, snap
        while cur is not None:  # walk this path's lineage back: the oldest checkpoint holding exactly `want`
            values = cur.values
            if values.get("steps") == want and not values.get("forced"):
                found = cur
            parent = (cur.parent_config or {}).get("configurable", {}).get("checkpoint_id")
            cur = by_id.get(parent) if parent else None
        if found is None:
            raise InputError(f"no checkpoint after step {number} is saved for this question")
        self.pointer = found.config
        self.say(f"back to just after step {number}:")
        for i, step in enumerate(want, 1):
            self.say(step_line(i, step))
        nxt = ", ".join(found.next) or "nothing (the answer)"
        self.say(
            f"next: {nxt}. /continue goes on from here, /reject N (N <= {number}) tries another action; "
            "the later steps stay in the saved history."
        )
        return dict(found.values)

    def resume(self) -> dict:
        """Go on from the checkpoint the session stands on (after /back, or an interrupted run)."""
        snap = self._snapshot()
        if not snap.values:
            raise InputError("this question was interrupted before its first step was saved: ask it again")
        if not snap.next:
            raise InputError(
                "nothing to continue: this question is answered. Ask another, /reject N, or /back N first"
            )
        return self._run(None, snap.config, len(snap.values.get("steps") or []))

    @staticmethod
    def _check_step(number: int, steps: list) -> None:
        if not steps:
            raise InputError("the current question has no steps yet")
        if not 1 <= number <= len(steps):
            raise InputError(f"no step {number}: the current path has steps 1 to {len(steps)} (see /steps)")

    # -- views -------------------------------------------------------------------------------------------
    def steps_text(self) -> str:
        """The current path with step numbers and scores, alternatives left, and abandoned branches."""
        snap = self._snapshot()
        values = snap.values
        steps, branches = values.get("steps") or [], values.get("branches") or []
        lines = [f"question: {values.get('question', '')}"]
        for i, step in enumerate(steps, 1):
            line = step_line(i, step)
            if len(branches) == len(steps):
                left = self._alternatives(branches[i - 1])
                line += f"  [{left} alternative(s) left]" if left else "  [no alternative left]"
            lines.append(line)
        if values.get("path_score") is not None and not snap.next:
            lines.append(f"path score {values['path_score']:.2f}")
        if snap.next:
            lines.append(f"stopped before: {', '.join(snap.next)} (/continue goes on)")
        for gone in values.get("abandoned") or []:
            score = "" if gone.get("path_score") is None else f", path score {gone['path_score']:.2f}"
            lines.append(f"abandoned from step {gone['from_step']}{score}: {gone['reason']}")
            for i, step in enumerate(gone["steps"], gone["from_step"]):
                lines.append("    " + step_line(i, step).strip())
        return "\n".join(lines)

    def evidence_text(self) -> str:
        """The kept sentences with their passage titles, then the passages retrieved."""
        values = self._snapshot().values
        kept, retrieved = values.get("evidence") or [], values.get("retrieved") or []
        lines = [f"evidence kept: {len(kept)} sentence(s)"]
        for s in kept:
            lines.append(f"  [{s.get('title', '')}] {s.get('text', '')}  (hop {int(s.get('hop', 0)) + 1})")
        lines.append(f"passages retrieved: {len(retrieved)}")
        for p in retrieved:
            lines.append(
                f"  {p.get('title', '')}  (score {p.get('score', 0):.3f}, hop {int(p.get('hop', 0)) + 1})"
            )
        return "\n".join(lines)

    def history_text(self) -> str:
        rows = self.history()
        if not rows:
            return f"session {self.session}: no questions yet"
        lines = [f"session {self.session}: {len(rows)} question(s)"]
        for r in rows:
            answer = r["answer"] if r["status"] != "running" else "(unfinished: /continue)"
            lines.append(
                f"  {r['n']}. {r['question']}\n     -> {answer}   ({r['steps']} steps, {r['backtracks']} backtrack(s))"
            )
        return "\n".join(lines)

    def sessions_text(self) -> str:
        rows = self.sessions()
        if not rows:
            return "no saved sessions yet"
        lines = [f"sessions in {self.db}:"]
        for r in rows:
            mark = "*" if r["session"] == self.session else " "
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["at"]))
            lines.append(
                f" {mark} {r['session']}  {r['questions']} question(s), last {when}: {_clip(r['last'], 60)}"
            )
        return "\n".join(lines)

    # -- the command line inside the chat ----------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Act on one input line: a question or a /command. Returns False when the user leaves."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            self._guard(lambda: self.ask(line))
            return True
        name, _, rest = line[1:].partition(" ")
        name, rest = name.lower(), rest.strip()
        if name in ("quit", "exit", "q"):
            return False
        views: dict[str, Callable[[], str]] = {
            "help": lambda: HELP,
            "steps": self.steps_text,
            "path": self.steps_text,
            "evidence": self.evidence_text,
            "history": self.history_text,
            "sessions": self.sessions_text,
        }
        if name in views:
            self._guard(lambda: self.say(views[name]()))
        elif name in ("reject", "back"):
            if not rest.isdigit():
                self.say(f"usage: /{name} N, with N a step number from /steps")
            else:
                self._guard(lambda: (self.reject if name == "reject" else self.back)(int(rest)))
        elif name in ("continue", "cont", "c"):
            self._guard(self.resume)
        else:
            self.say(f"unknown command /{name}: /help lists the commands")
        return True

    def _guard(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except ReasonRAGError as exc:
            self.say(f"error: {exc}")
        except sqlite3.DatabaseError as exc:  # the file was damaged or taken away while the chat ran
            self.say(
                f"error: the sessions database {self.db} failed ({exc}); what you just did may not be saved"
            )

    def banner(self) -> str:
        if self.resumed:
            head = f"session {self.session} resumed ({self.db})"
        else:
            head = f"session {self.session} (new; resume it with --session {self.session}) in {self.db}"
        lines = [head]
        if not self.scored:
            lines.append(
                "no PRM loaded: steps are not scored, so the agent does not backtrack and /reject is off"
            )
        elif self.nodes.backtrack_config is not None:
            cfg = self.nodes.backtrack_config
            if cfg.max_backtracks:
                lines.append(
                    f"backtracking on: below a path score of {cfg.threshold:.2f} ({cfg.aggregation} of step "
                    f"scores), at most {cfg.max_backtracks} time(s) a question"
                )
            else:
                lines.append("automatic backtracking off (--no-backtrack); /reject N still works")
        lines.append("Type a question. /help lists the commands; /quit or Ctrl-D leaves.")
        return "\n".join(lines)
