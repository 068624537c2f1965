"""QAT stages on tiny data: optimisation lowers the loss, DDP equals one process, resume continues."""
import os
import socket

import pytest
import torch

from tests.test_qat_data import write_tree
from training.data.dataset import Augment, SliceDataset
from training.data.index import build_index
from training.qat.student import StudentStep, Teacher, build_student, freeze_for_stage, train_mode
from training.qat.train import calibrate, collate, compute_loss, export_record, load_config, train_stage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    write_tree(root, n2d=4, n3d=3)
    return root


def tiny_config(stage, epochs=2):
    cfg = load_config(stage, epochs=epochs, samples=2)
    cfg.update(workers=0, batch_size=2)
    cfg["quant"]["calibration_batches"] = 1
    cfg["sampling"].update(val_samples_per_modality=1, val_fraction=0.34)
    cfg["optimizer"]["lr"] = 0.005
    return cfg


def fixed_batch(tree, n=2):
    index = build_index(tree, workers=1, progress=False)
    ds = SliceDataset(index, Augment(jitter=0, flip=False))
    return collate([ds[g] for g in range(0, len(index), max(1, len(index) // n))][:n])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_a_few_steps_of_each_stage_lower_the_loss(stage, weights, tree):
    torch.manual_seed(0)
    cfg = tiny_config(stage)
    batch = fixed_batch(tree, n=1)        # one sample: quantized backward through TinyViT is memory-hungry
    model = build_student(weights, [], stage)
    calibrate(model, stage, [batch], 1, torch.device("cpu"))
    params = freeze_for_stage(model, stage)
    train_mode(model, stage)
    teacher = Teacher(weights) if cfg["loss"]["distill_weight"] > 0 else None
    step = StudentStep(model)
    opt = torch.optim.SGD(params, lr=cfg["optimizer"]["lr"], momentum=0.9)
    losses = []
    for _ in range(4):
        loss, _, _ = compute_loss(step, teacher, batch, cfg, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    final = float(compute_loss(step, teacher, batch, cfg, torch.device("cpu"))[0])
    assert final < losses[0], (losses, final)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen if stage < 3 else not frozen


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_step(model, batch, cfg):
    params = freeze_for_stage(model, 2)
    train_mode(model, 2)
    return params, torch.optim.SGD(params, lr=cfg["optimizer"]["lr"], momentum=0.9)


def _ddp_worker(rank, world, port, weights, tree, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    cfg = tiny_config(2)
    batch = fixed_batch(tree, n=2)
    model = build_student(weights, [], 2)
    calibrate(model, 2, [batch], 1, torch.device("cpu"))
    _, opt = _one_step(model, batch, cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(StudentStep(model))
    half = {k: v[rank::world] for k, v in batch.items()}
    loss = compute_loss(ddp, None, half, cfg, torch.device("cpu"))[0]
    opt.zero_grad()
    loss.backward()
    opt.step()
    if rank == 0:
        torch.save({n: p.detach() for n, p in model.mask_decoder.named_parameters()}, out)
    torch.distributed.destroy_process_group()


def test_two_process_gloo_ddp_step_equals_one_process_on_the_combined_batch(weights, tree, tmp_path):
    out = tmp_path / "ddp.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), weights, tree, out), nprocs=2, join=True)
    cfg = tiny_config(2)
    batch = fixed_batch(tree, n=2)
    model = build_student(weights, [], 2)
    calibrate(model, 2, [batch], 1, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in model.mask_decoder.named_parameters()}
    _, opt = _one_step(model, batch, cfg)
    loss = compute_loss(StudentStep(model), None, batch, cfg, torch.device("cpu"))[0]
    opt.zero_grad()
    loss.backward()
    opt.step()
    ddp = torch.load(out)
    moved = 0
    for n, p in model.mask_decoder.named_parameters():
        torch.testing.assert_close(ddp[n], p.detach(), rtol=1e-4, atol=1e-6)
        moved += int(not torch.equal(before[n], p.detach()))
    assert moved > 10                                   # the step did change the decoder


def test_an_interrupted_stage_resumes_where_it_stopped(weights, tree, tmp_path, capsys):
    for out in ("a", "b"):                            # stage 2 starts from a stage-1 best.pt
        (tmp_path / out / "stage1").mkdir(parents=True)
        torch.save(export_record(build_student(weights, [], 1), [], {"stage": 1}, [], None),
                   tmp_path / out / "stage1" / "best.pt")
    cfg = tiny_config(2, epochs=2)
    train_stage(2, tree, tmp_path / "a", cfg, weights, progress=False)
    train_stage(2, tree, tmp_path / "b", cfg, weights, stop_after=1, progress=False)
    assert not (tmp_path / "b" / "stage2" / "epoch002.pt").exists()
    train_stage(2, tree, tmp_path / "b", cfg, weights, progress=False)
    assert "resuming at epoch 1" in capsys.readouterr().err
    a = torch.load(tmp_path / "a" / "stage2" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "stage2" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1 and len(b["history"]) == 2
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=1e-6)
    for name in ("best.pt", "epoch001.pt", "epoch002.pt", "curves.png", "log.jsonl", "best.json"):
        assert (tmp_path / "b" / "stage2" / name).is_file()
