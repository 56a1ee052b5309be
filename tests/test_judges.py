import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from personalab.judges import JudgeError, OpenAIJudge, logprob_weighted_score, repetition_rate
from personalab.traits import Trait
from tests.helpers import toy_trait_dict


def test_logprob_weighted_score():
    lp = {"80": math.log(0.5), "90": math.log(0.3), "foo": math.log(0.2)}
    assert logprob_weighted_score(lp) == pytest.approx((80 * 0.5 + 90 * 0.3) / 0.8)
    assert logprob_weighted_score({"yes": math.log(0.9), "5": math.log(0.1)}) is None
    assert logprob_weighted_score({"150": 0.0}) is None


def test_repetition_rate():
    assert repetition_rate("aye aye aye aye aye aye") > 0.7
    assert repetition_rate("the quick brown fox jumps over the lazy dog") == 0.0


class _Handler(BaseHTTPRequestHandler):
    mode = "ok"
    requests = 0

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.requests += 1
        if _Handler.mode.isdigit():  # an HTTP error status
            self.send_response(int(_Handler.mode))
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "nope"}}')
            return
        if _Handler.mode == "latin1":
            body = "réponse".encode("latin-1")
        elif _Handler.mode == "garbage":
            body = b"<html>oops</html>"
        elif _Handler.mode == "nologprobs":
            body = json.dumps({"choices": [{"message": {"content": "7"}}]}).encode()
        else:
            top = [{"token": "70", "logprob": math.log(0.6)}, {"token": "80", "logprob": math.log(0.4)}]
            body = json.dumps({"choices": [{"logprobs": {"content": [{"token": "70", "top_logprobs": top}]}}]}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture()
def server():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_openai_judge_against_local_server(server):
    _Handler.mode = "ok"
    judge = OpenAIJudge("judge-model", base_url=server, retries=1, backoff_s=0)
    t = Trait.from_dict(toy_trait_dict())
    [s] = judge.score(t, ["q"], ["a"])
    assert s.trait == pytest.approx(74.0) and s.coherence == pytest.approx(74.0)


@pytest.mark.parametrize("mode,match", [("garbage", "non-JSON"), ("nologprobs", "without top logprobs")])
def test_openai_judge_garbage_replies(server, mode, match):
    _Handler.mode = mode
    judge = OpenAIJudge("judge-model", base_url=server, retries=2, backoff_s=0)
    with pytest.raises(JudgeError, match=match):
        judge.score(Trait.from_dict(toy_trait_dict()), ["q"], ["a"])


def test_openai_judge_unreachable():
    judge = OpenAIJudge("m", base_url="http://127.0.0.1:9/v1", retries=2, backoff_s=0)
    with pytest.raises(JudgeError, match="unreachable"):
        judge.score(Trait.from_dict(toy_trait_dict()), ["q"], ["a"])


@pytest.mark.parametrize(
    "status,retries,requests,match",
    [
        ("401", 3, 1, r"HTTP 401 \(check the API key\): .*nope"),  # not retried: it cannot pass
        ("404", 3, 1, r"HTTP 404 \(check base_url and the model name\)"),
        ("500", 2, 3, r"HTTP 500"),  # retried: servers recover
        ("429", 0, 1, r"HTTP 429 \(rate limited\)"),  # retries=0 means one attempt
    ],
)
def test_openai_judge_reports_http_status_and_retries_only_what_can_pass(server, status, retries, requests, match):
    _Handler.mode, _Handler.requests = status, 0
    judge = OpenAIJudge("judge-model", base_url=server, retries=retries, backoff_s=0)
    with pytest.raises(JudgeError, match=match):
        judge.score(Trait.from_dict(toy_trait_dict()), ["q"], ["a"])
    assert _Handler.requests == requests


def test_openai_judge_edge_inputs(server):
    _Handler.mode, _Handler.requests = "latin1", 0
    judge = OpenAIJudge("judge-model", base_url=server, retries=0, backoff_s=0, timeout=5)
    assert judge.client.timeout == 5
    with pytest.raises(JudgeError, match="not UTF-8"):
        judge.score(Trait.from_dict(toy_trait_dict()), ["q"], ["a"])
    _Handler.mode, _Handler.requests = "ok", 0
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        judge.score(Trait.from_dict(toy_trait_dict()), ["q", "r"], ["a"])
    assert _Handler.requests == 0  # refused before anything was sent
    [s] = judge.score(Trait.from_dict(toy_trait_dict()), ["q"], ["a"])  # retries=0: one attempt that works
    assert s.trait == pytest.approx(74.0)
    with pytest.raises(ValueError, match="retries must be >= 0"):
        OpenAIJudge("m", base_url=server, retries=-1)


def test_mood_traits_blend_lexicon_sentiment_in_their_direction():
    """A trait that declares a sentiment sign is scored as the plain average of the exemplar
    classifier and VADER's compound score mapped to 0-100 in that direction; others are not."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from personalab import traits
    from personalab.judges import SENTIMENT_WEIGHT, EmbeddingJudge, JudgeError, judge_key

    judge = EmbeddingJudge()
    sad, optimistic, pirate = traits.load("sad"), traits.load("optimistic"), traits.load("pirate")
    assert (sad.sentiment, optimistic.sentiment, pirate.sentiment) == (-1, 1, 0)
    texts = ["Everything I loved is lost and I feel so alone and miserable.", "What a wonderful, happy, bright day!"]
    compound = [SentimentIntensityAnalyzer().polarity_scores(t)["compound"] for t in texts]
    assert judge.sentiment_scores(sad, texts) == pytest.approx([50 - 50 * c for c in compound])
    assert judge.sentiment_scores(optimistic, texts) == pytest.approx([50 + 50 * c for c in compound])
    s = judge.sentiment_scores(sad, texts)
    assert s[0] > 75 and s[1] < 25  # the gloomy text reads sad, the cheerful one does not
    w = SENTIMENT_WEIGHT
    want = [(1 - w) * e + w * v for e, v in zip(judge.exemplar_scores(sad, texts), s)]
    assert judge.trait_scores(sad, texts) == pytest.approx(want)
    assert judge.trait_scores(pirate, texts) == pytest.approx(judge.exemplar_scores(pirate, texts))
    with pytest.raises(JudgeError, match="declares no sentiment"):
        judge.sentiment_scores(pirate, texts)
    assert judge_key(judge) == judge.cache_id and judge_key(object()) == "object"


@pytest.mark.parametrize("bad", [2, -2, "1", 1.0, True])
def test_trait_sentiment_must_be_a_sign(bad):
    from personalab.traits import Trait, TraitError
    from tests.helpers import toy_trait_dict

    assert Trait.from_dict(toy_trait_dict()).sentiment == 0
    with pytest.raises(TraitError, match="sentiment"):
        Trait.from_dict({**toy_trait_dict(), "sentiment": bad})


def test_the_moods_are_the_four_traits_the_book_names():
    """Chapter 1 and the README name the traits whose judge blends in lexicon sentiment."""
    from personalab import traits

    signs = {n: traits.load(n).sentiment for n in traits.list_traits()}
    assert {n: s for n, s in signs.items() if s} == {"sad": -1, "pessimistic": -1, "optimistic": 1, "enthusiastic": 1}


def test_embedding_judge_computes_each_answer_logprob_once(tiny, monkeypatch):
    """The judge's log-probability pass runs once per distinct (question, answer): a repeat,
    in one call or a later one, is remembered and equals the plain answer_logprob value."""
    from personalab import judges

    qs, ans = ["Why?", "Who?", "Why?"], ["Because it rains.", "Nobody at all.", "Because it rains."]
    want = judges.answer_logprob(tiny, qs, ans)
    seen: list[list[str]] = []
    real = judges.answer_logprob

    def counting(model, questions, answers, **kw):
        seen.append(list(answers))
        return real(model, questions, answers, **kw)

    monkeypatch.setattr(judges, "answer_logprob", counting)
    judge = judges.EmbeddingJudge(tiny)
    assert judge.answer_logprobs(qs, ans) == pytest.approx(want)
    assert seen == [["Because it rains.", "Nobody at all."]]  # the repeated pair is computed once
    first = judge.coherence_scores(qs + ["Who?"], ans + ["Somebody."])
    assert seen[1:] == [["Somebody."]]  # only the new pair is computed
    assert first[:3] == judge.coherence_scores(qs, ans) and len(seen) == 2
    with pytest.raises(ValueError, match="questions"):
        judge.answer_logprobs(["Why?"], ["a", "b"])


def test_the_embedder_runs_in_bf16_where_scoring_does_and_says_so_in_its_cache_id(monkeypatch):
    """bfloat16 embeddings stay at cosine > 0.999 to float32's; the judge's cache id names the
    precision, so vectors filtered by one judge are never read back as the other's."""
    from personalab import judges
    from personalab.judges import EmbeddingJudge

    judge = EmbeddingJudge()
    texts = ["Arr, me hearty, the sea be calling!", "I feel so alone today.", "Good morning."]
    monkeypatch.setenv("PERSONALAB_BF16_SCORING", "0")
    exact, exact_id = torch.tensor(judge.embed(texts)), judge.cache_id
    monkeypatch.setenv("PERSONALAB_BF16_SCORING", "1")
    monkeypatch.setattr(judges, "cpu_has_bf16", lambda: True)  # autocast also runs where the CPU emulates bf16
    fast = torch.tensor(judge.embed(texts))
    assert not torch.equal(exact, fast), "bf16 embedding did not run"
    assert (exact * fast).sum(-1).min() > 0.999
    assert judge.cache_id != exact_id and "bfloat16" in judge.cache_id and "bfloat16" not in exact_id
