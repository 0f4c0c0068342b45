"""``keras-asc synth``: write the built-in synthetic dataset in the TAU22 layout."""

import time


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "synth",
        help="write a small synthetic dataset in the TAU22 / DCASE 2024 layout",
        description="Write a small synthetic acoustic-scene dataset in the exact TAU Urban "
        "Acoustic Scenes 2022 Mobile layout (1-s 24-bit 44.1 kHz WAVs under audio/, meta.csv, "
        "evaluation_setup/, split5-100.csv, test.csv), with scene-dependent signals and "
        "device-dependent colouring (s4-s6 only in the test split). Same arguments, same bytes.",
    )
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", help="folder to create (or replace, if synthetic)"
    )
    parser.add_argument(
        "--clips-per-class",
        type=int,
        default=60,
        help="training clips per scene in split100, >= 20 (default 60)",
    )
    parser.add_argument(
        "--test-clips-per-class",
        type=int,
        default=27,
        help="test clips per scene, a multiple of 9 (default 27)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(func=run)


def run(args):
    from keras_asc.data import tau22
    from keras_asc.data.synthetic import make_synthetic_tau22

    start = time.monotonic()
    root = make_synthetic_tau22(
        args.out_dir,
        clips_per_class=args.clips_per_class,
        test_clips_per_class=args.test_clips_per_class,
        seed=args.seed,
    )
    elapsed = time.monotonic() - start
    print(f"Wrote a synthetic TAU22-layout dataset to {root} in {elapsed:.1f} s.")
    for split in ("100", "test"):
        clips = tau22.load_split(root, split)
        print(f"split {split}:")
        print(tau22.format_split_summary(tau22.split_summary(clips)))
    return 0
