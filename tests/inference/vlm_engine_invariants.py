"""Engine invariants every VLM family's engine tests check the same way (each family's file calls them with its own
engine): batched/continuous stepping == sequential, bounded memory == unbounded until the window fills."""

import pytest
import torch

from livecue.inference.memory import SinkWindow, Unbounded


def feats(engine, n, seed=0):
    """``n`` random frames of the engine's model's features, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, engine.model.frame_num_tokens, engine.model.vision.hidden_size, generator=g)


def theta_between(events) -> float:
    """A threshold with some silence decisions of ``events`` on each side, in the middle of the widest gap between
    their p(silence) values (relatively), so that recomputing a p in another forward (float noise ~1e-7) flips none."""
    ps = sorted(e.p_silence for e in events if hasattr(e, "p_silence"))
    lo, hi = max(zip(ps[1:-2], ps[2:-1]), key=lambda pair: (pair[1] - pair[0]) / max(pair[1], 1e-30))
    assert hi - lo > 1e-3 * hi, f"no gap between the p(silence) values {ps}"
    return (lo + hi) / 2


def assert_batched_equals_sequential(engine, system: str, p_silence_tolerance: dict | None = None) -> None:
    """Three sessions (one speaks and is asked, one stays silent, one bounded and asked) stepped together, starting
    at different ticks: every event, history, position and cache equals the session stepped alone.
    ``p_silence_tolerance``: pytest.approx's tolerance for p(silence) (default ``abs=1e-5``)."""
    tolerance = p_silence_tolerance or {"abs": 1e-5}
    plan = [("talker", 0, 6, 1.0, None, [("Why?", 1.0)]), ("silent", 0, 5, 0.0, None, []),
            ("bounded", 2, 7, 1.0, SinkWindow(max_tokens=90, chunk=20), [("Where?", 0.0)])]
    streams = {name: feats(engine, n, seed) for seed, (name, _, n, *_) in enumerate(plan)}

    def sessions():
        out = {}
        for name, _, _, theta, memory, queries in plan:
            out[name] = engine.session(system, threshold=theta, memory=memory, record=True)
            for text, at in queries:
                out[name].add_query(text, at=at)
        return out

    seq, bat = sessions(), sessions()
    seq_events = {name: [e for k in range(n) for e in seq[name].push_frame(streams[name][k], k * 0.5)]
                  for name, _, n, *_ in plan}
    bat_events = {name: [] for name in bat}
    for tick in range(9):
        items = [(bat[name], streams[name][tick - start], (tick - start) * 0.5)
                 for name, start, n, *_ in plan if start <= tick < start + n]
        for (session, _, _), events in zip(items, engine.step(items)):
            bat_events[next(k for k, v in bat.items() if v is session)] += events
    for name in seq:
        assert [type(e) for e in bat_events[name]] == [type(e) for e in seq_events[name]], name
        for a, b in zip(bat_events[name], seq_events[name]):
            assert getattr(a, "token_ids", None) == getattr(b, "token_ids", None)
            assert getattr(a, "p_silence", 0) == pytest.approx(getattr(b, "p_silence", 0), **tolerance)
        assert bat[name].history == seq[name].history and bat[name].next_position == seq[name].next_position
        for la, lb in zip(bat[name].cache.layers, seq[name].cache.layers):
            torch.testing.assert_close(la.keys, lb.keys, atol=1e-5, rtol=1e-4)
    assert bat["bounded"].evicted_tokens > 0


def assert_bounded_equals_unbounded_until_full(engine, system: str) -> None:
    """A sink window far from full gives exactly the unbounded session's p(silence) and positions, evicting nothing."""
    f = feats(engine, 12, seed=4)
    a = engine.session(system, threshold=0.0, memory=Unbounded())
    b = engine.session(system, threshold=0.0, memory=SinkWindow(max_tokens=1000, chunk=100))
    pa = [e.p_silence for i in range(12) for e in a.push_frame(f[i], i * 0.5)]
    pb = [e.p_silence for i in range(12) for e in b.push_frame(f[i], i * 0.5)]
    assert pa == pb and b.evicted_tokens == 0 and a.next_position == b.next_position
