"""keras-iqa: no-reference image quality assessment (HCL, REQA, MetaIQA) on TensorFlow 2 / Keras 3."""

from setuptools import find_packages, setup

CORE = [
    "tensorflow==2.21.*",
    "keras>=3.15",
    "keras-hub>=0.32",
    "numpy",
    "scipy",
    "pandas>=2.2,<3",  # apache-beam 2.77's dataframe module (imported by its IPython integration) breaks on pandas 3
    "pillow",
    "scikit-image",
    "matplotlib",
    "pyyaml",
    "openpyxl",  # BID / SPAQ score sheets (.xlsx)
    "tqdm",  # progress bars of keras-iqa score
    "tabulate",  # pandas DataFrame.to_markdown: keras-iqa report tables
    "tensorflow-serving-api==2.21.*",  # ModelServerConfig proto for models.config (pure Python; needs the TF above)
]
EXTRAS = {
    "beam": ["apache-beam[tfrecord]==2.77.*"],
    "aws": ["apache-beam[tfrecord,aws]==2.77.*"],  # s3:// roots and outputs (Beam's S3 filesystem); docs/scaling.md
    "gcp": ["apache-beam[tfrecord,gcp]==2.77.*"],  # gs:// roots and outputs, DataflowRunner; docs/scaling.md
    "lite": ["ai-edge-litert"],
    "serving": ["tensorflow-serving-api==2.21.*"],
    "notebooks": ["nbclient", "nbformat", "ipykernel"],
    "torch": ["torch==2.13.0", "safetensors"],  # `keras-iqa convert` (checkpoints, .safetensors) and the bench peers
    "docs": ["mkdocs==1.6.1", "mkdocstrings-python==2.0.11"],  # the MkDocs site under docs/ (mkdocs.yml)
    "classical": ["scikit-learn"],  # `keras-iqa baseline fit brisque` (the SVR); scoring a fitted baseline needs only numpy
}
# demo: what `keras-iqa demo` (`make demo`) runs: Beam for synthesize/prepare (DirectRunner), the LiteRT interpreter for the
# TFLite export's parity check and `score` on the .tflite. No torch, notebooks, pytest or docs.
EXTRAS["demo"] = sorted({d for k in ("beam", "lite") for d in EXTRAS[k]})
# dev includes torch so the official-checkpoint converter tests run (the CPU wheel torch==2.13.0 installs here)
EXTRAS["dev"] = sorted(
    {"pytest", "hypothesis", "moto[server]"}  # moto: the S3 server tests/data_pipeline/test_scaling.py starts on 127.0.0.1
    # what tests import themselves, declared rather than left to arrive through another package: boto3 (test_scaling's S3
    # client), h5py (test_resume reads weight files), networkx (test_import_graph), huggingface_hub (test_presets' offline
    # hub), protobuf (test_export's text_format); h5py's and protobuf's versions are Keras's and TensorFlow's
    | {"boto3", "h5py", "huggingface_hub", "networkx", "protobuf"}
    | {d for k in ("beam", "aws", "lite", "serving", "notebooks", "torch", "docs", "classical") for d in EXTRAS[k]}
)

setup(
    name="keras-iqa",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_iqa", "keras_iqa.*", "data_pipeline", "data_pipeline.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["keras-iqa=keras_iqa.cli:main"]},
    license="Apache-2.0",
)
