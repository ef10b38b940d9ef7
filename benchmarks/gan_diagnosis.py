"""Why does the GAN propose (no) pairs? One mining pass, every quantity of the rule measured.

Usage:
  python benchmarks/gan_diagnosis.py --features R0.safetensors --gan R0-GAN.safetensors [--num-draws 4096]
      [--tau 0.5] [--base-radius 0.6] [--top-k 10] [--seed 0] [--json OUT.json]

One pass over the training images with the mining stage's own functions (augmented anchors through the
frozen backbone, `batch_triplets`, G, Dis, `propose_pairs`), and the bank alone for comparison. It prints:

  - the discriminator's score s = Dis(a, p', n) of the proxies (quantiles, share above tau), next to its
    score of the real triplets (a, p, n) and of (a, p, p'): does D simply call every proxy fake?
  - where the proxy lies: its similarity to its own row M_i, to its negative, and to its nearest other row
    (what the radius test sees), against the radius its score gives;
  - the bank's own neighbourhoods: each row's similarity to its nearest other row (what plain similarity sees);
  - with labels (a diagnostic only), the precision of each proxy's nearest row, of each row's nearest row,
    and the share of proposals the rule would keep under looser tau / radius.

LABELS are used only for the precision lines; mining never uses them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from isl_cli.data.store import load_split
from isl_cli.device import resolve_device
from isl_cli.engine.embedding import batch_source
from isl_cli.engine.features_file import open_features, which_graph
from isl_cli.engine.frozen_gan import open_frozen_gan
from isl_cli.engine.state import derive_seed, generator_for
from isl_cli.mining import propose_pairs
from isl_cli.neighbors import NeighborGraph
from isl_cli.precision import resolve
from isl_cli.triplets import batch_triplets

QUANTILES = (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)


def quantiles(values: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(values.double(), torch.tensor(QUANTILES, dtype=torch.float64))
    return {f"q{int(100 * k)}": round(float(v), 4) for k, v in zip(QUANTILES, q)}


@torch.no_grad()
def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    loaded = open_features(args.features, device)
    config = loaded.artifact.config
    precision = resolve(config.get("amp", "none"), bool(config.get("channels_last")), device)
    precision.prepare(loaded.model)
    generator, discriminator, _ = open_frozen_gan(args.gan, args.features, loaded, device)
    train = load_split(loaded.data_dir, "train", fingerprint=loaded.fingerprint)
    n, memory = len(train), loaded.memory  # (N, D)
    graph = NeighborGraph.from_pairs(which_graph(loaded.artifact, None, loaded.fingerprint, n).pairs.to(device), n)
    source = batch_source(train, loaded.spec, train=True, batch_size=args.batch_size, device=device, num_workers=0)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in (
        "index", "score", "real", "fake_p", "to_own", "to_negative", "nearest_sim", "nearest", "anchor_to_own")}
    tally = torch.zeros(5, dtype=torch.int64)
    for step, (indices, images) in enumerate(source.batches(generator_for(args.seed, "mine-batches", 0, 0))):
        draws = torch.Generator(device=device).manual_seed(derive_seed(args.seed, "mine-draws", 0, 0, step))
        anchors = precision.forward(loaded.model, images)  # (b, D)
        a, p, neg, _ = batch_triplets(anchors, indices, memory, graph, args.num_draws, draws)
        proxies = generator(a, p, neg)  # (b, D)
        scores = discriminator.score(a, proxies, neg).squeeze(1)  # (b,)
        tally += propose_pairs(proxies, scores, indices, memory, args.tau, args.base_radius, args.top_k).tally.cpu()
        similarity = proxies @ memory.t()  # (b, N)
        similarity.scatter_(1, indices[:, None], float("-inf"))  # i itself excluded, as the rule does
        best, where = similarity.max(dim=1)  # (b,), (b,)
        for key, value in (("index", indices), ("score", scores), ("real", discriminator.score(a, p, neg)[:, 0]),
                           ("fake_p", discriminator.score(a, p, proxies)[:, 0]), ("to_own", (proxies * p).sum(1)),
                           ("to_negative", (proxies * neg).sum(1)), ("nearest_sim", best), ("nearest", where),
                           ("anchor_to_own", (a * p).sum(1))):
            parts[key].append(value.cpu())
    got = {k: torch.cat(v) for k, v in parts.items()}
    radius = args.base_radius + (1 - got["score"]) * (1 - args.base_radius)  # (N,)
    bank_sim = memory @ memory.t()  # (N, N)
    bank_sim.fill_diagonal_(float("-inf"))
    bank_best, bank_where = bank_sim.max(dim=1)  # (N,), (N,)
    report = {
        "images": n, "tau": args.tau, "base_radius": args.base_radius,
        "score_proxy (a,p',n)": quantiles(got["score"]),
        "score_real (a,p,n)": quantiles(got["real"]),
        "score_fake (a,p,p')": quantiles(got["fake_p"]),
        "share_score_above_tau": float((got["score"] > args.tau).double().mean()),
        "proxy_to_own_row": quantiles(got["to_own"]),
        "proxy_to_negative": quantiles(got["to_negative"]),
        "proxy_to_nearest_other_row": quantiles(got["nearest_sim"]),
        "radius_from_score": quantiles(radius),
        "share_nearest_within_radius": float((got["nearest_sim"] > radius).double().mean()),
        "anchor_to_own_row": quantiles(got["anchor_to_own"]),
        "bank_row_to_nearest_other_row": quantiles(bank_best),
        "tally (images, rejected score, candidates, rejected radius, proposed)": tally.tolist(),
    }
    labels = train.labels
    if bool((labels >= 0).all()):
        same = (labels[got["index"]] == labels[got["nearest"]]).double()  # (N,)
        report["labels_note"] = "labels score these precisions only; mining never uses them"
        report["precision_proxy_nearest_row"] = float(same.mean())
        report["precision_bank_nearest_row"] = float((labels == labels[bank_where.cpu()]).double().mean())
        for margin in (0.0, 0.05, 0.1):  # what a looser radius would keep, and how precise it would be
            keep = got["nearest_sim"] > radius - margin
            report[f"radius_minus_{margin:g}: kept / precision"] = [
                int(keep.sum()), float(same[keep].mean()) if bool(keep.any()) else None]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--gan", type=Path, required=True)
    parser.add_argument("--num-draws", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--base-radius", type=float, default=0.6)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = measure(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
