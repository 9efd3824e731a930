"""Training: overfits one window, exact resume (stop or crash), GT never used, checkpoint round trip, the flow-warped
filter in the training forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from test_dataset import make_teacher_store

from smoother.checkpoint import load_checkpoint, save_checkpoint
from smoother.config import LossConfig, SmootherConfig, TrainConfig
from smoother.dataset import Batch, TeacherWindows, WindowSampler
from smoother.model import ResidualSmoother
from smoother.temporal_filter import gated_recursion, grid_flows
from smoother.train import TRAIN_VERSION, _forward, load_smoother, lr_lambda, param_groups, train
from steadydepth.config import Config
from steadydepth.errors import InputError

TINY = SmootherConfig(d_model=16, n_layers=1, headdim=8, chunk_size=4, depth_long_edge=16)  # grid 10×16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**train) -> Config:
    tc = {"steps": 6, "window": 8, "batch_size": 2, "crop_size": 8, "checkpoint_every": 3, "progress": False}
    return Config(smoother=TINY, train=TrainConfig(**{**tc, **train}))


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_overfits_one_window(tmp_path):
    """Anchor + static-temporal on one jittered static window: the loss falls by ≥ 5× within 100 steps."""
    uri = make_teacher_store(tmp_path / "v.teacher.zarr", num_frames=12, jitter=0.05)
    loss = LossConfig(anchor=0.1, temporal_static=1.0, temporal_accel=0, temporal_motion=0, smoothness=0, magnitude=0)
    cfg = _cfg(steps=100, window=12, batch_size=1, crop_size=None, flip=False, lr=1e-2, warmup_steps=5)
    cfg = cfg.model_copy(update={"loss": loss})
    history = []
    train(cfg, [uri], str(tmp_path / "run"), on_step=lambda step, losses: history.append(losses["total"]))
    assert len(history) == 100
    first, last = history[0], min(history[-10:])
    assert last < first / 5, (first, last)


def test_exact_resume_after_stop_and_after_crash(tmp_path):
    uris = [
        make_teacher_store(tmp_path / "a.teacher.zarr", num_frames=14, seed=0),
        make_teacher_store(tmp_path / "b.teacher.zarr", num_frames=10, height=20, width=20, seed=1),
    ]
    cfg = _cfg()
    straight = train(cfg, uris, str(tmp_path / "straight"))
    assert straight.steps == 6 and straight.step == 6

    first = train(cfg, uris, str(tmp_path / "stopped"), stop_after=3)
    assert first.step == 3
    second = train(cfg, uris, str(tmp_path / "stopped"))
    assert second.steps == 3 and second.step == 6
    _assert_same(_weights(straight.checkpoint), _weights(second.checkpoint))

    def crash(step, losses):
        if step == 5:  # after the step-3 checkpoint: steps 4 and 5 are lost and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, uris, str(tmp_path / "crashed"), on_step=crash)
    assert load_checkpoint(tmp_path / "crashed" / "last.pt")["step"] == 3
    resumed = train(cfg, uris, str(tmp_path / "crashed"))
    assert resumed.steps == 3
    _assert_same(_weights(straight.checkpoint), _weights(resumed.checkpoint))

    # a finished run resumes to a no-op; another smoother config is refused
    assert train(cfg, uris, str(tmp_path / "straight")).steps == 0
    other = cfg.model_copy(update={"smoother": TINY.model_copy(update={"d_model": 24})})
    with pytest.raises(InputError, match="another smoother config"):
        train(other, uris, str(tmp_path / "straight"))


def test_ground_truth_is_never_used(tmp_path):
    runs = []
    for gt in ("good", "nan", "garbage", None):
        uri = make_teacher_store(tmp_path / f"{gt}.teacher.zarr", num_frames=12, gt=gt)
        runs.append(train(_cfg(steps=3), [uri], str(tmp_path / f"run-{gt}")))
    for run in runs[1:]:
        _assert_same(_weights(runs[0].checkpoint), _weights(run.checkpoint))


def test_checkpoint_round_trip_and_result(tmp_path):
    uri = make_teacher_store(tmp_path / "v.teacher.zarr", num_frames=12)
    seen = []
    result = train(_cfg(steps=4), [uri], str(tmp_path / "run"), on_step=lambda s, losses: seen.append((s, losses)))
    assert [s for s, _ in seen] == [1, 2, 3, 4]
    assert {"total", "anchor", "temporal_static", "lr", "grad_norm"} <= set(seen[0][1])
    assert set(result.losses) >= {"total", "anchor"} and result.seconds > 0
    ckpt = load_checkpoint(result.checkpoint)
    assert {"model", "optimizer", "scheduler", "rng", "sampler", "config", "step"} <= set(ckpt)
    assert not list((tmp_path / "run").glob("*.tmp"))  # atomic write left no temporary file
    model = load_smoother(result.checkpoint)
    assert isinstance(model, ResidualSmoother) and not model.training and model.cfg == TINY
    _assert_same(model.state_dict(), ckpt["model"])
    with pytest.raises(InputError):
        load_smoother(tmp_path / "missing.pt")
    # a checkpoint written before the flow cues existed runs as it was trained: pixel-by-pixel cues
    before = Config(smoother=TINY.model_copy(update={"flow_cues": False}))
    legacy = {"config": before.model_dump(mode="json"), "model": ResidualSmoother(before.smoother).state_dict()}
    del legacy["config"]["smoother"]["flow_cues"], legacy["config"]["loss"]["flow_compensated"]
    save_checkpoint(tmp_path / "legacy.pt", legacy)
    assert model.cfg.flow_cues and not load_smoother(tmp_path / "legacy.pt").cfg.flow_cues
    # weights from before a model input was added (the teacher-noise cue): one clear line, not a torch traceback
    legacy["model"]["inp.weight"] = legacy["model"]["inp.weight"][:, 1:]
    save_checkpoint(tmp_path / "narrow.pt", legacy)
    with pytest.raises(InputError, match=r"narrow.pt holds weights .*inp.weight.*retrain"):
        load_smoother(tmp_path / "narrow.pt")
    # a checkpoint from a version whose config had another field: one clear line, for loading and for resuming
    ckpt["config"]["smoother"]["detail_filter"] = True
    old = tmp_path / "old" / "last.pt"
    old.parent.mkdir()
    torch.save(ckpt, old)
    with pytest.raises(InputError, match=r"old/last.pt was written by another version.*smoother.detail_filter"):
        load_smoother(old)
    with pytest.raises(InputError, match="another version"):
        train(_cfg(steps=4), [uri], str(old.parent))
    # a checkpoint of older training code (same config) is never resumed: its weights came from other arithmetic
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["train_version"] == TRAIN_VERSION
    ckpt["train_version"] = TRAIN_VERSION - 1
    torch.save(ckpt, result.checkpoint)
    with pytest.raises(InputError, match=f"training code version {TRAIN_VERSION - 1}"):
        train(_cfg(steps=4), [uri], str(tmp_path / "run"))


def test_param_groups_and_schedule():
    model = ResidualSmoother(TINY)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert any(n.endswith("A_log") for n in no_decay_names) and any(n.endswith(".bias") for n in no_decay_names)
    assert any("norm" in n for n in no_decay_names)
    assert all(p.ndim >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    lrs = [lr_lambda(s, warmup=10, total=100, min_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[50] < lrs[10] and lrs[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize(("flow_warp", "flow_cues"), [(True, True), (False, False), (False, True)])
def test_burn_in_forward_equals_one_pass_and_trains_only_the_window(tmp_path, flow_warp, flow_cues):
    uri = make_teacher_store(tmp_path / "v.teacher.zarr", num_frames=20)
    sampler = WindowSampler(TeacherWindows([uri], long_edge=16), window=6, batch_size=2, seed=1, burn_in=12)
    batch = next(b for b in (sampler.sample() for _ in range(20)) if b.context > 2)
    assert batch.rgb is not None
    flows = grid_flows(batch.rgb)[0]
    torch.manual_seed(0)
    model = ResidualSmoother(TINY.model_copy(update={"flow_warp": flow_warp, "flow_cues": flow_cues}))
    torch.nn.init.normal_(model.head.weight, std=0.1)  # a non-trivial residual
    torch.nn.init.constant_(model.head.bias, 0.5)  # and an open temporal filter (k ≈ 0.5)
    context, window = batch.split()
    residual, _ = _forward(model, context, window, flows=flows)
    one_pass, _ = _forward(model, None, batch, flows=flows)  # the model and the filter over all frames at once
    torch.testing.assert_close(residual, one_pass, rtol=1e-4, atol=1e-5)
    k = batch.context
    (g_context,) = torch.autograd.grad(residual[:, :k].sum(), model.head.weight, retain_graph=True)
    (g_window,) = torch.autograd.grad(residual[:, k:].sum(), model.head.weight)
    assert torch.all(g_context == 0) and g_window.abs().sum() > 0  # burn-in runs without gradients
    cfg = _cfg(steps=2, burn_in=8)
    assert train(cfg, [uri], str(tmp_path / "run")).step == 2


def _moving_batch(n: int = 10, h: int = 20, w: int = 28, speed: float = 1.0, seed: int = 0) -> Batch:
    """Two items of one smooth texture (rgb and log-depth alike) sliding right by `speed` px per frame."""
    rng = np.random.default_rng(seed)
    big = gaussian_filter(rng.random((h, w + 2 * n + 8)), 1.5)
    big = (big - big.min()) / (big.max() - big.min())
    frames = np.stack([big[:, n + 4 - round(t * speed) :][:, :w] for t in range(n)])  # (n, h, w)
    rgb = torch.from_numpy(frames).float()[None, :, None].expand(2, n, 3, h, w).contiguous()
    depth = torch.exp(torch.from_numpy(frames).float()[None, :, None].expand(2, n, 1, h, w)).contiguous()
    return Batch(depth, torch.ones_like(depth), rgb, torch.ones(2, n, dtype=torch.bool), [0, 0], [0, 0], [1, 1])


def test_grid_flows_follow_the_motion_and_carry_the_frame_before():
    batch = _moving_batch()
    flows, grays = grid_flows(batch.rgb)
    assert flows.shape == (2, 10, 20, 28, 2) and len(grays) == 2 and grays[0].shape == (20, 28)
    assert torch.all(flows[:, 0] == 0)  # no frame before the first: no flow
    inside = flows[:, 1:, 4:-4, 6:-6]
    # content moves +1 px in x per frame, so frame t samples frame t−1 one pixel to the left
    assert inside[..., 0].median() == pytest.approx(-1.0, abs=0.15)
    assert inside[..., 1].abs().median() < 0.15
    # the last grey frame carried in gives the first frame its flow, as in one pass over all frames
    _, tail = grid_flows(batch.rgb[:, :4])
    carried, _ = grid_flows(batch.rgb[:, 4:], tail)
    torch.testing.assert_close(carried, flows[:, 4:])


def test_training_forward_runs_the_filter_along_the_flow():
    """With flow_warp the training filter is the flow-warped recursion over the window (the same arithmetic as
    refinement); it follows a moving pattern, so the refined window lags the teacher less than without."""
    batch = _moving_batch(n=12)
    torch.manual_seed(0)
    model = ResidualSmoother(TINY)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.0, 0.9]))  # ΔD = 0, gate k = 0.9 (holds strongly)
    _, window = batch.split()
    flows = grid_flows(batch.rgb)[0]
    warped, _ = _forward(model, None, window, flows=flows)
    out = model(batch.depth, batch.confidence, batch.rgb, flows=flows)
    x = batch.depth.log()[:, :, 0]
    expected, _ = gated_recursion(x, out.keep[:, :, 0], None, TINY.filter_reset, flows, out.noise_scale)
    torch.testing.assert_close(warped[:, :, 0], expected - x)
    plain = ResidualSmoother(TINY.model_copy(update={"flow_warp": False}))
    plain.load_state_dict(model.state_dict())
    unwarped, _ = _forward(plain, None, window, flows=flows)
    lag = lambda residual: residual[:, 4:, 0, 4:-4, 6:-6].abs().mean()  # noqa: E731  (drift from the teacher)
    assert lag(warped) < 0.3 * lag(unwarped), (lag(warped), lag(unwarped))
