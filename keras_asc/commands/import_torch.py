"""``keras-asc import-torch PRESET WEIGHTS --out FILE.keras``: a PyTorch state dict as a
keras-asc model, ready for ``evaluate``, ``ensemble``, ``quantize`` and ``predict``."""

import os
import sys

from keras_asc.text import install_hint


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "import-torch",
        help="load a PyTorch state dict (CP-JKU / DCASE 2024 baseline) into a preset",
        description="Copy the weights of a PyTorch state dict or PyTorch-Lightning checkpoint "
        "(the DCASE 2024 Task 1 baseline, the CP-JKU CP-ResNet, or benchmarks/torch_reference.py "
        "module names) into a keras-asc preset and save it as a .keras model. Files are read "
        "with torch.load(weights_only=True) only. Needs PyTorch: " + install_hint("torch") + ".",
    )
    parser.add_argument("preset", help="model preset the weights belong to, e.g. dcase24_baseline")
    parser.add_argument("weights", help="file written by torch.save (state dict or Lightning checkpoint)")
    parser.add_argument("--out", required=True, help="the .keras file to write")
    parser.add_argument(
        "--layout",
        default="auto",
        choices=("auto", "torch_reference", "dcase2024_baseline", "cpjku_cp_resnet"),
        help="module naming of the state dict (default: detected from the keys)",
    )
    parser.set_defaults(func=run)


def run(args):
    if not args.out.endswith(".keras"):
        print(f"keras-asc import-torch: error: --out must end in .keras. Received: {args.out!r}", file=sys.stderr)
        return 2
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        print(f"keras-asc import-torch: error: folder {out_dir!r} of --out does not exist.", file=sys.stderr)
        return 2

    from keras_asc.training.torch_import import import_torch_model

    report = import_torch_model(args.preset, args.weights, args.out, layout=args.layout)
    print(f"keras-asc import-torch: {report}")
    print(f"keras-asc import-torch: wrote {args.out}")
    return 0
