"""MixedPrecisionTrainer: accumulation, clipping, warmup and checkpoints behave as promised."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from deepseek_ray.data import ArrayDataset
from deepseek_ray.optim import MixedPrecisionTrainer, lr_factor


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
    for p, q in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_clipping_bounds_the_gradient_norm():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    trainer = trainer_for(model, clip_grad_norm=0.01, per_device_train_batch_size=64)
    data = linear_problem(64)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(data, epochs=1)
    assert trainer.last_grad_norm > 0.01  # the raw norm was larger ...
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert float(moved) <= 0.1 * 0.01 + 1e-6  # ... but the step used the clipped one (lr × max_norm)


def test_warmup_then_cosine_schedule():
    factors = [lr_factor(step, 4, 12, "cosine") for step in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[12] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
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
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
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
    drilled = trainer_for(copy.deepcopy(base), per_device_train_batch_size=16)
    drilled.set_gradient_accumulation(steps=2)
    raised = []

    def oom_once(step: int, micro_index: int) -> None:
        if step == 1 and micro_index == 1 and not raised:
            raised.append(step)
            raise torch.OutOfMemoryError("injected")

    if where == "forward":
        drilled.before_micro_batch = oom_once
    else:  # in the middle of a backward: half the gradients are already accumulated when it strikes
        drilled.model[0].register_full_backward_hook(lambda *_: oom_once(drilled.step, 1))
    with pytest.warns(UserWarning, match="micro-batch now 8, accumulation 4"):
        drilled.fit(data, epochs=2)
    assert raised and drilled.oom_events == 1
    assert (drilled.batch_size, drilled.accumulation, drilled.step) == (8, 4, reference.step)
    for p, q in zip(reference.model.parameters(), drilled.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_without_oom_recovery_an_out_of_memory_propagates():
    trainer = trainer_for(torch.nn.Linear(5, 3), per_device_train_batch_size=16, oom_recovery=False)

    def oom(step: int, micro_index: int) -> None:
        raise torch.OutOfMemoryError("injected")

    trainer.before_micro_batch = oom
    with pytest.raises(torch.OutOfMemoryError):
        trainer.fit(linear_problem(32), epochs=1)
    assert trainer.batch_size == 16
