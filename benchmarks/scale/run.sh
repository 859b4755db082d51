#!/usr/bin/env bash
# The runs behind results/scale.json (make bench-scale). Hours on 2 CPU cores: see README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=".venv/bin/python benchmarks/scale/scale.py"
# ResNet-50, light, T = 32: peak memory against the number of calibration samples (spilled to disk)
$B convert --arch resnet50 --levels light --samples 8,16 --store disk
# the same conversion on 1, 2 and 4 ranks of one thread each, and the artifacts compared
$B ranks --arch resnet50 --levels light --samples 8 --store disk --ranks 1,2,4
$B compare "${SCALE_WORK:-/tmp}"/snnc-scale/resnet50_light_8_disk_{1,2,4}x1.snn --samples 2
# where the spike trains live: memory, disk or recomputed (side by side, interleaved)
$B convert --arch examples/fashion_mnist/models/resnet.onnx --calib .data/fashion_mnist/calib.npz --levels light --samples 1024 --store memory,disk,recompute --reps 2
# which backends can hold each architecture, and each converting at 224x224
$B check --arch resnet18,resnet50,vgg16_bn,mobilenet_v2,regnet_x_400mf
$B convert --arch mobilenet_v2,regnet_x_400mf,resnet18 --levels none,light --samples 4
$B convert --arch vgg16_bn --levels none --samples 4
# speed-up of 2 and 4 ranks over 1 (one thread per rank), on an otherwise idle machine
$B ranks --arch resnet18 --levels light --samples 4 --ranks 1,2,4
$B eval --arch resnet18,mobilenet_v2,regnet_x_400mf --samples 4
# eval throughput of every architecture on 1 and 2 ranks of one thread, net of start-up (2 and 6 samples)
$B eval --arch resnet18,resnet50,vgg16_bn,mobilenet_v2,regnet_x_400mf --samples 2,6 --ranks 1,2 --threads 1
$B table
