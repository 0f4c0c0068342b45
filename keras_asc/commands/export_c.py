"""``keras-asc export-c RUN_OR_TFLITE OUT/``: the int8 model and its front-end as C sources."""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export-c",
        help="write an int8 model and its log-mel front-end as C sources for a device",
        description="Write the int8 .tflite file as a 16-byte aligned C array with its length "
        "and its TFLite Micro arena size (NAME_model.c/.h), the front-end constants of every "
        "model input (NAME_frontend.c/.h) and a portable C99 log-mel implementation "
        "(kasc_logmel.c/.h) whose FFT is a hook (CMSIS-DSP's arm_rfft_fast_f32 fits it), with a "
        "plain reference FFT for hosts (kasc_rfft_reference.c/.h).",
    )
    parser.add_argument(
        "source",
        metavar="RUN_OR_TFLITE",
        help="a .tflite file from keras-asc quantize (its .json and .frontend.npz beside it), "
        "or a run directory (every file in its int8/ folder)",
    )
    parser.add_argument("out", metavar="OUT", help="folder to write the C sources into")
    parser.set_defaults(func=run)


def run(args):
    from keras_asc.quantization.export_c import export_c

    written = export_c(args.source, args.out)
    for path in written:
        print(path)
    return 0
