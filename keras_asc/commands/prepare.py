"""``keras-asc prepare --data DIR --split 25 --cache DIR``: decode a split once into the cache."""

from keras_asc.commands import add_on_error_argument


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "prepare",
        help="decode a TAU22 split into the 32 kHz audio cache",
        description="Decode and resample every clip of a split once, in one worker process "
        "per CPU core, and store the float32 samples (exactly what training decodes without "
        "a cache) in one memory-mapped .npy file plus a JSON manifest, so that training and "
        "evaluation with --cache skip decoding. Size: clips x 32,000 x 4 bytes (17.9 GB for "
        "split 100, 4.5 GB for split 25, 3.8 GB for the test split); a split100 cache also "
        "serves splits 5-50. An interrupted run resumes where it stopped; a cache written by "
        "an older keras-asc (int16) is rebuilt.",
    )
    parser.add_argument("--data", required=True, help="TAU22-layout dataset folder")
    parser.add_argument(
        "--split",
        required=True,
        help="5, 10, 25, 50, 100 (also split25, 25%%) or test",
    )
    parser.add_argument("--cache", "--cache-dir", dest="cache", required=True, help="cache folder")
    parser.add_argument("--splits", help="folder with the DCASE 2024 split files (optional)")
    parser.add_argument(
        "--sampling-rate", type=int, default=32000, help="rate of the cached audio (default 32000)"
    )
    parser.add_argument(
        "--clip-seconds", type=float, default=1.0, help="clip length in seconds (default 1.0)"
    )
    parser.add_argument(
        "--resampler",
        choices=("soxr_hq", "sinc_hann", "polyphase"),
        default="soxr_hq",
        help="how the files reach the cache's rate: soxr_hq (librosa.load's default; the "
        "MofleNet and CP-ResNet models), sinc_hann (torchaudio's default Resample; "
        "dcase24_baseline) or polyphase (scipy resample_poly); the cache is keyed by it, so "
        "use the model's (default soxr_hq)",
    )
    add_on_error_argument(parser, skipped="record them in the manifest and go on")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild a cache that was made for a different file list",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="the most clips a worker decodes per task"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default: one per CPU core)"
    )
    parser.set_defaults(func=run)


def run(args):
    from keras_asc.data.pipeline import prepare_cache

    manifest = prepare_cache(
        args.data,
        args.split,
        args.cache,
        sampling_rate=args.sampling_rate,
        clip_seconds=args.clip_seconds,
        splits_dir=args.splits,
        on_error=args.on_error,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        num_workers=args.workers,
        resampler=args.resampler,
    )
    print(f"wrote {manifest['array_path']}")
    print(f"wrote {manifest['manifest_path']}")
    return 0
