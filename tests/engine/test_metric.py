"""DetectionMAP, the ignite metric: the same numbers as the metric functions it adapts, across processes too."""

from __future__ import annotations

import pytest
from ignite.engine import Engine
from metrics import random_dataset

from ssdkit.engine.metric import DetectionMAP
from ssdkit.errors import SSDKitError
from ssdkit.metrics import evaluate_coco, evaluate_voc


def run_metric(metric, dets, gts, batch_size=5):
    batches = [(dets[i : i + batch_size], gts[i : i + batch_size]) for i in range(0, len(dets), batch_size)]
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "det")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics["det"]


@pytest.mark.parametrize("kind", ["voc07", "voc"])
def test_detection_map_engine_equals_evaluate_voc(kind):
    dets, gts = random_dataset(2)
    got = run_metric(DetectionMAP(5, metric=kind), dets, gts)
    want = evaluate_voc(dets, gts, 5, use_07_metric=kind == "voc07")
    assert got["map"] == pytest.approx(want["map"], abs=1e-12)
    assert got["ap"] == pytest.approx(want["ap"], abs=1e-12)


def test_detection_map_coco_and_reset():
    dets, gts = random_dataset(4, num_images=10, integer=False)
    metric = DetectionMAP(5, metric="coco", class_names=[f"c{k}" for k in range(5)])
    got = run_metric(metric, dets, gts, batch_size=3)
    want = evaluate_coco(dets, gts, [f"c{k}" for k in range(5)])
    assert got["map"] == got["AP"] == pytest.approx(want["AP"], abs=1e-12)
    # a second run starts from scratch (reset at epoch start)
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "det")
    engine.run([(dets[:3], gts[:3])], max_epochs=1)
    assert engine.state.metrics["det"]["AP"] == pytest.approx(
        evaluate_coco(dets[:3], gts[:3], metric.class_names)["AP"]
    )
    with pytest.raises(SSDKitError, match="metric"):
        DetectionMAP(5, metric="voc12")


def test_detection_map_gathers_across_processes(monkeypatch):
    # two simulated ranks: compute() must evaluate the union of what every process saw
    import ignite.distributed as idist

    dets, gts = random_dataset(6, num_images=10)
    rank0, rank1 = DetectionMAP(5), DetectionMAP(5)
    rank0.update((dets[:6], gts[:6]))
    rank1.update((dets[6:], gts[6:]))
    monkeypatch.setattr(idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(idist, "all_gather", lambda obj: [obj, (rank1._detections, rank1._ground_truths)])
    assert rank0.compute()["map"] == pytest.approx(evaluate_voc(dets, gts, 5)["map"], abs=1e-12)


def _distributed_map(local_rank, out):
    import ignite.distributed as idist

    dets, gts = random_dataset(6, num_images=10)
    rank = idist.get_rank()
    metric = DetectionMAP(5)
    metric.update((dets[rank::2], gts[rank::2]))
    out.put((rank, metric.compute()["map"]))


@pytest.mark.slow
def test_detection_map_gloo_two_processes():
    import multiprocessing as mp

    import ignite.distributed as idist

    queue = mp.get_context("spawn").Manager().Queue()
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_distributed_map, queue)
    got = dict(queue.get() for _ in range(2))
    dets, gts = random_dataset(6, num_images=10)
    want = evaluate_voc(dets, gts, 5)["map"]
    assert got[0] == pytest.approx(want, abs=1e-12) and got[1] == pytest.approx(want, abs=1e-12)
