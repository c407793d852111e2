"""Small input shapes for the reference models, so tests stay fast (architectures allow them)."""

SMALL = {
    "resnet18": (1, 3, 64, 64),
    "mobilenetv2": (1, 3, 64, 64),
    "yolo-small": (1, 3, 128, 128),
    "digits-cnn": (1, 1, 16, 16),
}
