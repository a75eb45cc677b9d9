import time

import torch

from pipeline.builders import build_model, build_optimizer, build_scheduler
from pipeline.config import load_config
from pipeline.engine import train_one_epoch


def test_epoch_stats_count_the_time_spent_waiting_for_batches():
    cfg = load_config(None, ["model.name=light", "model.image_size=64", "train.batch_size=2", "train.warmup_iters=0"])
    torch.manual_seed(0)
    net = build_model(cfg.model, num_classes=3)
    optimizer = build_optimizer(net, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, total_iters=10)
    priors = net.priors.shape[0]

    def slow_batches(n: int, delay: float):
        for _ in range(n):
            time.sleep(delay)  # a starved input pipeline
            yield (torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8), torch.zeros(2, priors, 4),
                   torch.randint(0, 3, (2, priors)))  # fmt: skip

    stats = train_one_epoch(net, slow_batches(3, 0.2), optimizer, scheduler, cfg.loss, cfg.train)
    assert stats.images == 6
    assert 0.6 <= stats.data_wait_s < stats.seconds
    assert 0.0 < stats.data_wait_fraction < 1.0

    fast = train_one_epoch(net, slow_batches(3, 0.0), optimizer, scheduler, cfg.loss, cfg.train)
    assert fast.data_wait_s < 0.2 < stats.data_wait_s
