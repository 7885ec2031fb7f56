"""MixedPrecisionTrainer: accumulation, clipping, warmup and checkpoints behave as promised."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from deepseek_ray.config import TrainConfig
from deepseek_ray.data import ArrayDataset
from deepseek_ray.optim import BestWeights, Callback, EarlyStopping, MixedPrecisionTrainer, lr_factor


class OOMOnce(Callback):
    """Raises one out-of-memory error before micro-batch 1 of optimizer step 1."""

    def __init__(self):
        self.raised: list[int] = []

    def on_micro_batch_start(self, trainer, step: int, micro_index: int) -> None:
        if step == 1 and micro_index == 1 and not self.raised:
            self.raised.append(step)
            raise torch.OutOfMemoryError("injected")


class AlwaysOOM(Callback):
    def on_micro_batch_start(self, trainer, step: int, micro_index: int) -> None:
        raise torch.OutOfMemoryError("injected")


def linear_problem(n: int = 64):
    generator = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator))


def trainer_for(model, **kwargs):
    return MixedPrecisionTrainer(model=model, optimizer="sgd", lr=0.1, weight_decay=0.0, seed=0, **kwargs)


def test_accumulation_equals_one_large_batch():
    torch.manual_seed(0)
    base = torch.nn.Linear(5, 3)
    data = linear_problem(64)
    big = trainer_for(copy.deepcopy(base), per_device_train_batch_size=64)
    small = trainer_for(copy.deepcopy(base), per_device_train_batch_size=16)
    small.set_gradient_accumulation(steps=4)
    big.fit(data, epochs=3)
    small.fit(data, epochs=3)
    assert big.step == small.step == 3
    for p, q in zip(big.model.parameters(), small.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_clipping_bounds_the_gradient_norm():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    trainer = trainer_for(model, clip_grad_norm=0.01, per_device_train_batch_size=64)
    data = linear_problem(64)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(data, epochs=1)
    assert trainer.last_grad_norm > 0.01  # the raw norm was larger ...
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert float(moved) <= 0.1 * 0.01 + 1e-6  # ... but the step used the clipped one (lr × max_norm)


def test_warmup_then_cosine_schedule():
    factors = [lr_factor(step, 4, 12, "cosine") for step in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[12] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:], strict=False))
    trainer = trainer_for(torch.nn.Linear(5, 3), warmup_steps=4, scheduler="cosine", per_device_train_batch_size=16)
    seen = []
    trainer.fit(linear_problem(64), epochs=1, on_epoch_end=lambda e, m: seen.append(m["lr"]))
    assert seen == [pytest.approx(0.1)]  # 4 steps: the last is the end of warmup


def test_fp16_on_cpu_warns_once_and_falls_back():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = MixedPrecisionTrainer(model=torch.nn.Linear(5, 3), optimizer="adamw", lr=5e-5, fp16=True)
    assert trainer.amp_dtype is None and len([w for w in caught if "fp16" in str(w.message)]) == 1
    assert MixedPrecisionTrainer(model=torch.nn.Linear(5, 3), bf16=True).amp_dtype is torch.bfloat16


def test_state_dict_resumes_exactly():
    torch.manual_seed(0)
    data = linear_problem(64)
    straight = trainer_for(torch.nn.Linear(5, 3), per_device_train_batch_size=16)
    straight.fit(data, epochs=4)
    torch.manual_seed(0)
    first = trainer_for(torch.nn.Linear(5, 3), per_device_train_batch_size=16)
    first.fit(data, epochs=2)
    state = first.state_dict()
    resumed = trainer_for(torch.nn.Linear(5, 3), per_device_train_batch_size=16)
    resumed.load_state_dict(state)
    resumed.fit(data, epochs=4)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_nan_loss_is_an_error():
    model = torch.nn.Linear(5, 3)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan"):
        trainer_for(model).fit(linear_problem(16), epochs=1)


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_out_of_memory_backs_off_and_keeps_the_effective_batch(where):
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    data = linear_problem(64)
    reference = trainer_for(copy.deepcopy(base), per_device_train_batch_size=16)
    reference.set_gradient_accumulation(steps=2)
    reference.fit(data, epochs=2)
    drill = OOMOnce()
    callbacks = [drill] if where == "forward" else []
    drilled = trainer_for(copy.deepcopy(base), per_device_train_batch_size=16, callbacks=callbacks)
    drilled.set_gradient_accumulation(steps=2)
    raised = drill.raised
    if where == "backward":  # in the middle of a backward: half the gradients are already accumulated when it strikes
        drilled.model[0].register_full_backward_hook(lambda *_: drill.on_micro_batch_start(drilled, drilled.step, 1))
    with pytest.warns(UserWarning, match="micro-batch now 8, accumulation 4"):
        drilled.fit(data, epochs=2)
    assert raised and drilled.oom_events == 1
    assert (drilled.batch_size, drilled.accumulation, drilled.step) == (8, 4, reference.step)
    for p, q in zip(reference.model.parameters(), drilled.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_without_oom_recovery_an_out_of_memory_propagates():
    trainer = trainer_for(torch.nn.Linear(5, 3), per_device_train_batch_size=16, oom_recovery=False,
                          callbacks=[AlwaysOOM()])
    with pytest.raises(torch.OutOfMemoryError):
        trainer.fit(linear_problem(32), epochs=1)
    assert trainer.batch_size == 16


def test_the_schedule_is_torch_s_and_resumes_from_its_state():
    data = linear_problem(64)

    def make():
        torch.manual_seed(0)
        return trainer_for(torch.nn.Linear(5, 3), per_device_train_batch_size=16, warmup_steps=3, scheduler="cosine")

    straight, lrs = make(), []
    straight.fit(data, epochs=4, on_epoch_end=lambda e, m: lrs.append(m["lr"]))
    assert lrs == [pytest.approx(0.1 * lr_factor(s, 3, 16, "cosine")) for s in (3, 7, 11, 15)]
    first = make()
    first.fit(data, epochs=4, on_epoch_end=lambda e, m: e == 2)  # stops after epoch 2 of 4
    state = first.state_dict()
    assert isinstance(first.lr_scheduler, torch.optim.lr_scheduler.LambdaLR)
    assert state["lr_scheduler"]["last_epoch"] == 8
    resumed, resumed_lrs = make(), []
    resumed.load_state_dict(state)
    resumed.fit(data, epochs=4, on_epoch_end=lambda e, m: resumed_lrs.append(m["lr"]))
    assert resumed_lrs == lrs[2:]
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


class Scripted(Callback):
    """Reports a scripted ``score`` per epoch (runs before the callbacks that read it)."""

    def __init__(self, scores):
        self.scores = scores

    def on_epoch_end(self, trainer, epoch, metrics):
        metrics["score"] = self.scores[epoch - 1]


def test_early_stopping_and_best_weights_survive_a_restart():
    data = linear_problem(64)

    def make():
        best, stopping = BestWeights("score", "max"), EarlyStopping("score", "max", patience=2)
        scripted = Scripted([0.5, 0.7, 0.6, 0.6, 0.6, 0.6])
        return trainer_for(torch.nn.Linear(5, 3), callbacks=[scripted, best, stopping]), best

    first, _ = make()
    snapshots = []
    def snapshot_then_stop_after_3(epoch, metrics):
        snapshots.append({k: v.clone() for k, v in first.model_state().items()})
        return epoch == 3

    history = first.fit(data, epochs=6, on_epoch_end=snapshot_then_stop_after_3)
    assert [m["best"] for m in history] == [0.5, 0.7, 0.7] and [m["stopping"] for m in history] == [False] * 3
    state = first.state_dict()
    assert state["callbacks"]["early_stopping"] == {"best": 0.7, "stale": 1}
    resumed, best = make()
    resumed.load_state_dict(state)
    history = resumed.fit(data, epochs=6)
    assert [m["epoch"] for m in history] == [4] and history[-1]["stopping"]  # 2 epochs without a better score
    assert best.best == 0.7 and all(torch.equal(best.weights[k], v) for k, v in snapshots[1].items())
    again, _ = make()
    again.load_state_dict(resumed.state_dict())
    assert again.fit(data, epochs=6) == []  # a restart after the stop decision trains no further


def test_from_config_builds_the_trainer_the_train_section_describes():
    config = TrainConfig(optimizer={"type": "sgd", "lr": 0.05, "weight_decay": 0.0}, per_device_train_batch_size=16,
                         scheduler={"type": "linear", "warmup_steps": 2}, gradient_accumulation=2, clip_grad_norm=0.5,
                         precision="bf16")
    trainer = MixedPrecisionTrainer.from_config(config, torch.nn.Linear(5, 3), seed=7, task="regression")
    assert isinstance(trainer.optimizer, torch.optim.SGD) and trainer.lr_scheduler.base_lrs == [0.05]
    assert (trainer.batch_size, trainer.accumulation, trainer.clip_grad_norm) == (16, 2, 0.5)
    assert trainer.amp_dtype is torch.bfloat16
    assert (trainer.schedule, trainer.warmup_steps, trainer.seed, trainer.task) == ("linear", 2, 7, "regression")
    with pytest.raises(ValueError, match="optimizer.lr is not set"):
        MixedPrecisionTrainer.from_config(TrainConfig(), torch.nn.Linear(5, 3))
