"""``keras-asc download``: fetch TAU22, the DCASE 2024 split files and the MicIRP DIRs."""

import sys

DATASETS = ("tau22",)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "download",
        help="download TAU22 (development), the DCASE 2024 splits and the MicIRP DIRs",
        description="Download the TAU Urban Acoustic Scenes 2022 Mobile development set "
        "(Zenodo record 6337421: meta, doc and 16 audio archives, checked against their "
        "published MD5), the DCASE 2024 Task 1 split files (checked by row count) and the "
        "MicIRP device impulse responses released by CP-JKU. Files without a published "
        "checksum are downloaded and their SHA-256 printed. Interrupted downloads resume; "
        "finished files are skipped on a rerun; archives are extracted into DIR (members "
        "that would escape it are refused).",
    )
    parser.add_argument("dataset", choices=DATASETS, help="what to download")
    parser.add_argument("data_dir", metavar="DIR", help="dataset folder to create or complete")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated subset of meta,splits,dirs,audio (default: all; audio is ~26 GB)",
    )
    parser.add_argument(
        "--keep-archives",
        action="store_true",
        help="keep the downloaded zip files after extraction (default: delete them)",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="retries per file on network errors (default 3)"
    )
    parser.add_argument(
        "--manifest",
        default=None,
        help="JSON list of files to fetch instead of the built-in table (for mirrors)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the files that would be fetched and exit"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args):
    from keras_asc.data import download

    if args.retries < 0:
        raise ValueError(
            f"--retries must be 0 or more (retries after the first attempt). "
            f"Received: {args.retries}"
        )
    manifest = download.load_manifest(args.manifest) if args.manifest else None
    if args.dry_run:
        for line in download.describe_manifest(manifest, only=args.only):
            print(line)
        return 0
    results = download.download_tau22(
        args.data_dir,
        only=args.only,
        manifest=manifest,
        keep_archives=args.keep_archives,
        retries=args.retries,
        stream=None if args.quiet else sys.stderr,
    )
    fetched = sum(status == "downloaded" for status in results.values())
    print(
        f"{args.data_dir}: {fetched} file(s) downloaded, {len(results) - fetched} already present."
    )
    return 0
