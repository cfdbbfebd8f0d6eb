"""Your own model under DDP, its gradients sent through a lowcomm compressor.

An ordinary DistributedDataParallel training script (a small network on scikit-learn's digits,
each process on its own half of the training images) with one extra line: the lowcomm hook,
here top-k 1% per tensor with error feedback. It prints the training loss, the test accuracy
and the gradient bytes the hook sent against what dense all-reduce would have sent.

    torchrun --standalone --nproc_per_node 2 examples/ddp_train.py
    torchrun --standalone --nproc_per_node 2 examples/ddp_train.py --compressor sign

On GPUs (one per process) it uses NCCL; on CPUs, gloo.
"""

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lowcomm import ddp


def network() -> nn.Module:
    """The model: 8x8 images to 10 classes through one hidden layer."""
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def digits(device: torch.device) -> tuple[torch.Tensor, ...]:
    """Training and test images (scaled to [0, 1]) and labels: the first 1,500 images train."""
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32, device=device)
    y = torch.tensor(y, device=device)
    return X[:1500], y[:1500], X[1500:], y[1500:]


@torch.no_grad()
def train_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """The loss over every process's training images (each process holds the same model)."""
    loss = F.cross_entropy(model(X), y, reduction="sum")
    total = torch.stack([loss, torch.tensor(float(len(y)), device=X.device)])
    dist.all_reduce(total)
    return float(total[0] / total[1])


def main() -> None:
    """Parse the options, train, and report on rank 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compressor", default="topk:0.01", help="a lowcomm compressor string")
    parser.add_argument(
        "--error-feedback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep what the compressor did not send and add it to the next gradient",
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)

    X, y, X_test, y_test = digits(device)
    X, y = X[rank::world], y[rank::world]  # this process's half of the training images
    torch.manual_seed(0)  # DDP broadcasts rank 0's initial weights anyway
    model = DistributedDataParallel(network().to(device), device_ids=[device] if cuda else None)
    ledger = ddp.HookLedger()
    model.register_comm_hook(None, ddp.hook(args.compressor, args.error_feedback, ledger))

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    batches = torch.Generator(device=device).manual_seed(rank)
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(y), (args.batch_size,), generator=batches, device=device)
        loss = F.cross_entropy(model(X[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            loss = train_loss(model.module, X, y)
            if rank == 0:
                print(f"step {step}: train loss {loss:.4f}")

    if rank == 0:
        with torch.no_grad():
            accuracy = (model.module(X_test).argmax(dim=1) == y_test).float().mean()
        sent, dense = ledger.sent, ledger.dense  # this process's gradient bytes, every step
        print(f"test accuracy {float(accuracy):.3f}")
        print(
            f"{args.compressor}: gradient bytes sent {sent:,} instead of {dense:,}"
            f" ({sent / dense:.2%}), {dense - sent:,} saved"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
