"""How a GAN epoch and a mining pass split between the backbone forward and everything else.

Run: python benchmarks/bench_gan_mine.py [--repeats 10] [--device cpu|cuda] [--width 0.25]
(about a minute on 2 CPU cores)

Setting: N = 50,000, D = 128, B = 128, K = 4,096 draws, the graph of
bench_loss.py, resnet18 (32x32, --width 0.25) in eval mode. One batch of each
stage is timed in its parts, with the stages' own functions:
  GAN:    augmentation + backbone forward | triplets (draws, nearest negative) | G and D update
  mining: augmentation + backbone forward | triplets | G, D score, top-k rule, graph update
An epoch or a pass is N / B such batches, so the shares are those of the
whole epoch or pass. The rest should be a small share. Each figure is the
minimum over interleaved repeats.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loss import BATCH, DIM, NUM_ITEMS, interleaved, make_benchmark_graph  # noqa: E402
from bench_step import backbone_spec, parse_args, stored_batch, synchronizer  # noqa: E402

from isl_cli.bank import MemoryBank  # noqa: E402
from isl_cli.config import GanConfig, MineConfig  # noqa: E402
from isl_cli.data.augment import CIFAR_MEAN, CIFAR_STD, BatchAugment  # noqa: E402
from isl_cli.triplets import batch_triplets  # noqa: E402
from isl_cli.engine.gan import GanState, gan_step  # noqa: E402
from isl_cli.mining import propose_pairs  # noqa: E402
from isl_cli.models.gan import Discriminator, Generator  # noqa: E402
from isl_cli.neighbors import NeighborGraph  # noqa: E402


def main() -> int:
    args = parse_args(__doc__, repeats=10)
    device = torch.device(args.device)
    sync = synchronizer(device)
    generator = torch.Generator().manual_seed(0)
    model = backbone_spec(args.width).build(device).eval()
    memory = MemoryBank(NUM_ITEMS, DIM, generator=generator, device=device).memory  # (N, D)
    graph, _ = make_benchmark_graph(NUM_ITEMS, generator)
    graph = graph.to(device)
    base_keys = graph.keys
    stored, indices = stored_batch(device, generator)  # (B, 3, 32, 32) uint8, (B,)
    augment = BatchAugment(32, CIFAR_MEAN, CIFAR_STD)
    gan_cfg, mine_cfg = GanConfig(), MineConfig()
    gen_net, dis_net = Generator(DIM).to(device), Discriminator(DIM).to(device)
    state = GanState(cfg=gan_cfg, generator=gen_net, discriminator=dis_net,
                     opt_g=torch.optim.Adam(gen_net.parameters(), lr=gan_cfg.lr),
                     opt_d=torch.optim.Adam(dis_net.parameters(), lr=gan_cfg.lr), round=0, features_id="bench")
    draw_gen = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        anchors = model(augment(stored, generator))  # (B, D)
        a, p, n, _ = batch_triplets(anchors, indices, memory, graph, gan_cfg.num_draws, draw_gen)

    def forward() -> None:
        with torch.no_grad():
            model(augment(stored, generator))
        sync()

    def triplets() -> None:
        with torch.no_grad():
            batch_triplets(anchors, indices, memory, graph, gan_cfg.num_draws, draw_gen)
        sync()

    def gan_update() -> None:
        gan_step(state, a, p, n)
        sync()

    def mine_rule() -> None:
        with torch.no_grad():
            proxies = gen_net(a, p, n)  # (B, D)
            scores = dis_net.score(a, proxies, n).squeeze(1)  # (B,)
            rows, cols = propose_pairs(proxies, scores.clamp(min=0.9), indices, memory, mine_cfg.tau, 0.0,
                                       mine_cfg.top_k)  # every row proposes its top k: the worst case
            NeighborGraph._unchecked(NUM_ITEMS, base_keys).add_pairs(rows, cols)
        sync()

    print(f"resnet18 width {args.width}, N={NUM_ITEMS} D={DIM} B={BATCH} K={gan_cfg.num_draws} on {device}, "
          f"torch threads={torch.get_num_threads()}")
    times = interleaved({"forward": forward, "triplets": triplets, "gan": gan_update, "mine": mine_rule},
                        repeats=args.repeats)
    best = {name: min(values) for name, values in times.items()}
    for stage, extra, label in (("GAN epoch", "gan", "G and D update"),
                                ("mining pass", "mine", "G, D score, rule, graph update")):
        total = best["forward"] + best["triplets"] + best[extra]
        print(f"{stage} (per batch {total * 1e3:.1f} ms; {NUM_ITEMS // BATCH} batches per epoch "
              f"-> {total * NUM_ITEMS / BATCH:.1f} s):")
        print(f"  augmentation + backbone forward {best['forward'] * 1e3:7.1f} ms  {best['forward'] / total:6.1%}")
        print(f"  triplets                        {best['triplets'] * 1e3:7.1f} ms  {best['triplets'] / total:6.1%}")
        print(f"  {label:<31} {best[extra] * 1e3:7.1f} ms  {best[extra] / total:6.1%}")
        print(f"  everything but the backbone: {(total - best['forward']) / total:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
