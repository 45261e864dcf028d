"""Apply this project's edits to an unpacked BVLC Caffe tree (commit 9b8915401); run by build_caffe.sh.

    python3 patch_caffe.py CAFFE_SOURCE_DIR LAYER_CPP

1-3. The three edits today's toolchain needs (../shared/caffe/README.md): protobuf >= 3.20's
     one-argument CodedInputStream::SetTotalBytesLimit (src/caffe/util/io.cpp), and OpenCV 4's
     cv::IMREAD_COLOR / cv::IMREAD_GRAYSCALE for the removed CV_LOAD_IMAGE_* constants (io.cpp,
     layers/window_data_layer.cpp).
4.   The authors' PairwiseParameter message (dhn-caffe caffe.proto: engine 1, axis 2, l_threshold 3,
     q_threshold 4, l_lambda 5, q_gamma 6, with their defaults) and `pairwise_param` in
     LayerParameter. dhn-caffe used field number 132; in this tree 132 is taken, so it gets 149,
     the next free LayerParameter ID (the field number is invisible in prototxt text).
5.   The CPU port of the authors' layer, copied to src/caffe/layers/pairwise_loss_layer.cpp.

Each edit must apply exactly as expected; otherwise one line names it and the exit status is 1.
"""
import os
import shutil
import sys

PAIRWISE_MESSAGE = """
// The authors' PairwiseLoss parameters (zhuhan1236/dhn-caffe caffe.proto), added by reproduce-dhn.
message PairwiseParameter {
  enum Engine {
    DEFAULT = 0;
    CAFFE = 1;
    CUDNN = 2;
  }
  optional Engine engine = 1 [default = DEFAULT];
  optional float l_threshold = 3 [default = -1];
  optional float q_threshold = 4 [default = -1];
  optional float l_lambda = 5 [default = 1];
  optional float q_gamma = 6 [default = 1];
  optional int32 axis = 2 [default = 1];
}
"""

EDITS = [
    # (step name, file, old text, new text, expected number of occurrences)
    ("protobuf SetTotalBytesLimit", "src/caffe/util/io.cpp",
     "SetTotalBytesLimit(kProtoReadBytesLimit, 536870912)",
     "SetTotalBytesLimit(kProtoReadBytesLimit)", 1),
    ("OpenCV 4 imread flags in io.cpp", "src/caffe/util/io.cpp",
     "(is_color ? CV_LOAD_IMAGE_COLOR :\n    CV_LOAD_IMAGE_GRAYSCALE)",
     "(is_color ? cv::IMREAD_COLOR :\n    cv::IMREAD_GRAYSCALE)", 2),
    ("OpenCV 4 imread flag in window_data_layer.cpp", "src/caffe/layers/window_data_layer.cpp",
     "cv::imread(image.first, CV_LOAD_IMAGE_COLOR)", "cv::imread(image.first, cv::IMREAD_COLOR)", 1),
    ("PairwiseParameter field in LayerParameter", "src/caffe/proto/caffe.proto",
     "  optional SwishParameter swish_param = 147;\n",
     "  optional SwishParameter swish_param = 147;\n"
     "  optional PairwiseParameter pairwise_param = 149;\n", 1),
    ("PairwiseParameter message", "src/caffe/proto/caffe.proto",
     "\nmessage PowerParameter {\n", PAIRWISE_MESSAGE + "\nmessage PowerParameter {\n", 1),
]


def main(source, layer_cpp):
    for step, rel, old, new, times in EDITS:
        path = os.path.join(source, rel)
        if not os.path.isfile(path):
            sys.exit(f"patch step '{step}': {rel} not found in {source}")
        with open(path) as f:
            text = f.read()
        found = text.count(old)
        if found != times:
            sys.exit(f"patch step '{step}': expected {times} occurrence(s) in {rel}, found {found}")
        with open(path, "w") as f:
            f.write(text.replace(old, new))
    target = os.path.join(source, "src/caffe/layers/pairwise_loss_layer.cpp")
    if os.path.exists(target):
        sys.exit(f"patch step 'PairwiseLoss layer': {target} already exists")
    shutil.copyfile(layer_cpp, target)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python3 patch_caffe.py CAFFE_SOURCE_DIR LAYER_CPP")
    main(sys.argv[1], sys.argv[2])
