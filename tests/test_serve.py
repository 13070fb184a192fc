"""`reasonrag serve` end to end on 127.0.0.1: Search-R1's contract, 4xx for bad requests, and an agent
searching through RemoteRetriever gives the same answers as with the local index."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip(
    "fastapi", reason='the retrieval server needs the serve extra: pip install "reasonrag[serve]"'
)
pytest.importorskip(
    "uvicorn", reason='the retrieval server needs the serve extra: pip install "reasonrag[serve]"'
)

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

from reasonrag import build_agent, run_agent  # noqa: E402
from reasonrag.cli.main import main  # noqa: E402
from reasonrag.data.corpus import Corpus, load_questions  # noqa: E402
from reasonrag.errors import InputError, RetrieverUnavailableError  # noqa: E402
from reasonrag.policies.embedded import EmbeddedPolicy  # noqa: E402
from reasonrag.retrieval.remote import RemoteRetriever  # noqa: E402
from reasonrag.retrieval.retriever import DenseRetriever, as_search_backend  # noqa: E402
from reasonrag.retrieval.server import make_app  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> DenseRetriever:
    mp = pytest.MonkeyPatch()
    mp.setenv("REASONRAG_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield DenseRetriever(Corpus.load(str(DATA / "tiny_corpus.jsonl")), k=3)
    mp.undo()


@pytest.fixture(scope="module")
def url(local) -> str:
    """A real uvicorn server on a free port of 127.0.0.1, in a thread, for the whole module."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(local, name="tiny"), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_retrieve_answers_search_r1s_contract(url, local):
    queries = ["Who directed Harbor Lights?", "Who wrote The Quiet Orchard?"]
    body = httpx.post(f"{url}/retrieve", json={"queries": queries, "topk": 2, "return_scores": True}).json()
    assert list(body) == ["result"] and len(body["result"]) == 2
    for query, hits in zip(queries, body["result"]):
        expected = local.search(query, k=2)
        assert [h["document"]["id"] for h in hits] == [e.passage.id for e in expected]
        assert [h["score"] for h in hits] == pytest.approx([e.score for e in expected])
        top = hits[0]["document"]
        passage = expected[0].passage
        assert top["contents"] == f"{passage.title}\n{passage.text}"  # FlashRAG's corpus line
        assert top["sentences"] == list(passage.sentences)
    plain = httpx.post(f"{url}/retrieve", json={"queries": queries[:1]}).json()["result"][0]
    assert len(plain) == local.k and "id" in plain[0] and "score" not in plain[0]  # default topk, no scores
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["passages"] == len(local.passages)


@pytest.mark.parametrize(
    "request_body, problem",
    [
        ({"topk": 3}, "queries"),
        ({"queries": "one string", "topk": 3}, "queries"),
        ({"queries": ["q"], "topk": 0}, "topk"),
        ({"queries": ["q"], "topk": "many"}, "topk"),
        ({"queries": ["q", "  "]}, "queries.1 is empty"),
        ({"queries": ["q"], "top_k": 3}, "top_k"),
        ({"queries": ["q"] * 5000}, "queries"),
        ([1, 2], "body"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_clear_message(url, request_body, problem):
    response = httpx.post(f"{url}/retrieve", json=request_body)
    assert 400 <= response.status_code < 500
    assert problem in response.json()["error"]


def test_malformed_json_and_wrong_method_are_4xx_too(url):
    response = httpx.post(
        f"{url}/retrieve", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "error" in response.json()
    assert httpx.get(f"{url}/retrieve").status_code == 405
    assert httpx.get(f"{url}/nowhere").status_code == 404


def test_agent_through_the_server_answers_as_with_the_local_index(url, local):
    policy = EmbeddedPolicy()
    remote = RemoteRetriever(url=url, k=3)
    assert as_search_backend(remote) is remote  # searched directly, not through the LangChain adapter
    here = build_agent(retriever=local, policy=policy, max_hops=3, k=3)
    there = build_agent(retriever=remote, policy=policy, max_hops=3, k=3)
    for q in load_questions(str(DATA / "tiny_questions.jsonl")):
        a, b = run_agent(here, q.question), run_agent(there, q.question)
        assert b["answer"] == a["answer"]
        strip = [{k: v for k, v in s.items() if k != "seconds"} for s in a["steps"]]
        assert [{k: v for k, v in s.items() if k != "seconds"} for s in b["steps"]] == strip
    # exclusion still returns k, as locally
    seen = {h.passage.id for h in local.search("Harbor Lights", k=3)}
    assert [h.passage.id for h in remote.search("Harbor Lights", k=3, exclude=seen)] == [
        h.passage.id for h in local.search("Harbor Lights", k=3, exclude=seen)
    ]


def test_unreachable_server_and_wrong_corpus_are_one_line_errors(url, local, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(RetrieverUnavailableError, match="reasonrag serve"):
        RemoteRetriever(url=f"http://127.0.0.1:{free}", timeout=2).search("anything")
    with pytest.raises(InputError, match="topk"):
        RemoteRetriever(url=url).search("anything", k=5000)
    # the CLI checks that the server holds the corpus it was asked about, before any model loads
    assert main(["ask", "Who?", "--corpus", "hotpotqa", "--retriever-url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reasonrag: error [INVALID_INPUT]") and "serves corpus 'tiny'" in err
    assert "\n" not in err


class TestRemoteRetrieverStandard(RetrieversIntegrationTests):
    """RemoteRetriever under langchain-tests' standard retriever suite."""

    _url: str = ""

    @pytest.fixture(autouse=True)
    def _server(self, url):
        type(self)._url = url

    @property
    def retriever_constructor(self) -> type[RemoteRetriever]:
        return RemoteRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"url": self._url, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "Who directed the film Harbor Lights?"


def test_serve_without_the_extra_or_with_a_bad_port_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the serve extra were not installed
    assert main(["serve", "--corpus", str(DATA / "tiny_corpus.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reasonrag: error [MISSING_DEPENDENCY]") and 'pip install "reasonrag[serve]"' in err
    monkeypatch.delitem(sys.modules, "uvicorn")
    assert main(["serve", "--port", "70000"]) == 2
    assert "[INVALID_INPUT]" in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_a_one_line_error_before_the_index_loads(capsys):
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        assert main(["serve", "--corpus", "no-such-corpus", "--port", str(port)]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("reasonrag: error [PORT_IN_USE]") and str(port) in err and len(err.splitlines()) == 1
    )


def test_concurrent_requests_are_searched_together_with_each_getting_its_own_results(local):
    from concurrent.futures import ThreadPoolExecutor

    from reasonrag.retrieval.server import QueryBatcher

    queries = [q.question for q in load_questions(str(DATA / "tiny_questions.jsonl"))] * 4
    alone = [[h.passage.id for h in local.search_batch([q], k=2)[0]] for q in queries]

    class Slow:  # the first batch takes a while, as under load: everything sent meanwhile waits for it
        calls = 0

        def search_batch(self, batch, k):
            Slow.calls += 1
            if Slow.calls == 1:
                time.sleep(0.5)
            return local.search_batch(batch, k=k)

    batcher = QueryBatcher(Slow())
    with ThreadPoolExecutor(len(queries)) as pool:
        together = list(pool.map(lambda q: [h.passage.id for h in batcher.search([q], 2)[0]], queries))
    assert together == alone
    assert batcher.searched == len(queries) and batcher.batches <= 3
