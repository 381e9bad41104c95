"""`converter import`: OpenVINO IR -> our torch VTN, exact on our own builds, on the real trained
Open Model Zoo driver encoder, and through the user's path (import -> train -> build -> stream)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")

from conftest import TINY_CLASSES, TINY_SIZE  # noqa: E402

from converter.build import BuildOptions, build  # noqa: E402
from converter.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from converter.cli import main as converter_main  # noqa: E402
from converter.config import VTNConfig  # noqa: E402
from converter.ir_graph import float_reference, read_ir  # noqa: E402
from converter.ir_import import IRImportError, import_decoder, import_encoder, import_vtn  # noqa: E402
from converter.models.vtn import VTN  # noqa: E402
from vtn_edge.preprocess import center_crop_resize, normalize  # noqa: E402

DRIVER = (
    "omz-weights/driver-action-recognition-adas-0002-encoder-FP16-INT8/driver-action-recognition-adas-0002-encoder.xml"
)
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # ov.convert_model on torch modules
RESNET34_TOPOLOGY = "omz-topologies/action-recognition-0001/action-recognition-0001-encoder.FP16.xml"


def _outputs(model: VTN, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and logits for BGR frames, each model with its own normalisation (an import may
    express the same first layer with another std)."""
    clips = torch.from_numpy(normalize(frames, model.config.preprocessing))
    with torch.no_grad():
        return model.embed(clips), model(clips)


def _random_trained_like(arch: str) -> VTN:
    """A model whose batch norms are not the identity (so folding them is tested) and whose
    activations stay O(1), like a trained one's."""
    torch.manual_seed(3)
    model = VTN(VTNConfig(arch=arch, num_classes=5, centre_window=True)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.2, 0.5)
                module.bias.uniform_(-0.1, 0.1)
    return model


def _build_omz(model: VTN, directory: Path, precision: str) -> Path:
    checkpoint = save_checkpoint(model, directory / "model.safetensors")
    return build(
        BuildOptions(
            arch=model.config.arch,
            checkpoint=checkpoint,
            precision=precision,
            interface="omz",
            out=directory / f"omz-{precision}",
            verify_clips=1,
        )
    )


@pytest.fixture(scope="module")
def mobilenet_omz(tmp_path_factory) -> tuple[VTN, Path]:
    model = _random_trained_like("mobilenetv2")
    return model, _build_omz(model, tmp_path_factory.mktemp("mobilenet_omz"), "fp32")


def _round_trip(model: VTN, out: Path) -> tuple[VTN, float, float, float]:
    imported = import_vtn(out / "encoder.xml", out / "decoder.xml").model
    size = model.config.preprocessing.input_size
    frames = np.random.default_rng(1).integers(0, 256, (2, 16, size, size, 3), dtype=np.uint8)
    (emb0, log0), (emb1, log1) = _outputs(model, frames), _outputs(imported, frames)
    scale = float(emb0.abs().max())
    return imported, float((emb0 - emb1).abs().max()), float((log0 - log1).abs().max()), scale


@pytest.mark.parametrize("arch", ["mobilenetv2", "resnet34"])
def test_our_omz_build_imports_back_exactly(arch, mobilenet_omz, tmp_path):
    if arch == "mobilenetv2":
        model, out = mobilenet_omz
    else:
        model = _random_trained_like(arch)
        out = _build_omz(model, tmp_path, "fp32")
    imported, emb_diff, logit_diff, _ = _round_trip(model, out)
    assert emb_diff <= 1e-4 and logit_diff <= 1e-4
    config = imported.config
    assert (config.arch, config.relu6, config.centre_window, config.num_classes) == (arch, True, True, 5)
    assert config.preprocessing.mean == pytest.approx(model.config.preprocessing.mean, abs=1e-6)


def test_fp16_build_imports_back_within_fp16_tolerance(tmp_path):
    model = _random_trained_like("mobilenetv2")
    _, emb_diff, logit_diff, scale = _round_trip(model, _build_omz(model, tmp_path, "fp16"))
    # FP16 weights carry about 3 significant digits
    assert emb_diff <= 2e-3 * max(1.0, scale) and logit_diff <= 2e-3 * max(1.0, scale)
    assert emb_diff > 0  # the weights really went through FP16


def test_the_trained_tiny_model_round_trips(trained_checkpoint, tmp_path):
    model = load_checkpoint(trained_checkpoint)
    imported, emb_diff, logit_diff, _ = _round_trip(model, _build_omz(model, tmp_path, "fp32"))
    assert emb_diff <= 1e-4 and logit_diff <= 1e-4
    assert imported.config.preprocessing.input_size == model.config.preprocessing.input_size


def _real_frames(shared_data: Path, pre, per_video: int = 20) -> np.ndarray:
    import cv2

    crops = []
    for video in sorted((shared_data / "videos").iterdir()):
        cap = cv2.VideoCapture(str(video))
        index = 0
        while len(crops) < per_video * (1 + sorted((shared_data / "videos").iterdir()).index(video)):
            ok, frame = cap.read()
            if not ok:
                break
            if index % 5 == 0:
                crops.append(center_crop_resize(frame, pre))
            index += 1
        cap.release()
    return np.stack(crops)


def _ir_embeddings(model: ov.Model | str, crops: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.stack([compiled(np.moveaxis(c.astype(np.float32), -1, 0)[None])[0].reshape(-1) for c in crops])


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_the_real_driver_encoder_imports_and_builds_back(shared_data, tmp_path):
    xml = shared_data / DRIVER
    result = import_vtn(xml, labels=shared_data / "labels/driver_actions.txt")
    config = result.model.config
    assert (config.arch, config.relu6, config.project_before_pool) == ("mobilenetv2", False, True)
    assert config.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406), abs=2e-4)  # FP16-rounded ImageNet
    assert result.metadata["decoder"] == "untrained" and config.num_classes == 9
    crops = _real_frames(shared_data, config.preprocessing)
    assert len(crops) >= 100
    with torch.no_grad():
        ours = result.model.encoder(torch.from_numpy(normalize(crops, config.preprocessing))).numpy()
    # the IR's arithmetic without its 8-bit activations: the import is exact
    float_ir = _ir_embeddings(float_reference(read_ir(xml)), crops)
    assert _cosine(float_ir, ours).min() > 0.9999
    # the IR as it runs: its activation rounding alone moves it; the figures go into the docs
    as_run = _cosine(_ir_embeddings(str(xml), crops), ours)
    assert as_run.mean() > 0.95

    checkpoint = save_checkpoint(result.model, tmp_path / "driver.safetensors")
    out = build(
        BuildOptions(
            arch="mobilenetv2",
            checkpoint=checkpoint,
            precision="fp32",
            interface="omz",
            out=tmp_path / "rebuilt",
            verify_clips=1,
        )
    )
    rebuilt = ov.Core().read_model(out / "encoder.xml")
    (pool,) = [op for op in rebuilt.get_ordered_ops() if op.get_type_name() == "ReduceMean"]
    assert list(pool.get_input_shape(0)) == [1, 512, 7, 7]  # the projection runs before pooling, as in the original
    assert _cosine(_ir_embeddings(rebuilt, crops), float_ir).min() > 0.9999


def test_the_omz_resnet34_topology_is_recognised_and_mapped(shared_data, tmp_path):
    """action-recognition-0001's encoder (no weights here: a random .bin of the right length)."""
    import shutil
    import xml.etree.ElementTree as ET

    src = shared_data / RESNET34_TOPOLOGY
    xml = tmp_path / "encoder.xml"
    shutil.copy(src, xml)
    end = max(
        int(layer.find("data").get("offset")) + int(layer.find("data").get("size"))
        for layer in ET.parse(src).getroot().find("layers")
        if layer.get("type") == "Const"
    )
    (np.random.default_rng(0).standard_normal(end // 2).astype(np.float16) * 0.05).tofile(xml.with_suffix(".bin"))
    encoder = import_encoder(xml)
    assert encoder.arch == "resnet34"
    model = VTN(VTNConfig(arch="resnet34"))
    model.encoder.load_state_dict(encoder.state)  # every key, every shape


# ---------------------------------------------------------------- the user's path
def test_import_train_build_stream(shared_data, tiny_dataset, tmp_path):
    from converter.train import TrainOptions, train
    from vtn_edge import StreamingRecognizer
    from vtn_edge.video import read_frames

    checkpoint = tmp_path / "driver.safetensors"
    assert converter_main(["import", "--encoder", str(shared_data / DRIVER), "--out", str(checkpoint)]) == 0
    run = tmp_path / "run"
    train(
        TrainOptions(
            arch="mobilenetv2",
            data=str(tiny_dataset / "train" / "core"),
            init_checkpoint=str(checkpoint),
            freeze_encoder=True,
            views=1,
            input_size=TINY_SIZE,
            epochs=2,
            batch_size=8,
            workers=0,
            flip=False,
            out=str(run),
        )
    )
    trained = load_checkpoint(run / "best.safetensors")
    assert trained.config.labels == TINY_CLASSES and trained.config.project_before_pool
    model_dir = build(
        BuildOptions(arch="mobilenetv2", checkpoint=run / "best.safetensors", precision="fp32", out=tmp_path / "ir",
                     verify_clips=1)
    )  # fmt: skip
    clip = next((tiny_dataset / "val" / "core" / TINY_CLASSES[0]).iterdir())
    with StreamingRecognizer(model_dir) as rec:
        predictions = list(rec.run(clip))
    assert len(predictions) == len(read_frames(clip))
    assert any(p.window_full for p in predictions)
    assert all(p.label in TINY_CLASSES for p in predictions if p.window_full)


# ---------------------------------------------------------------- bad input
def test_an_image_classifier_is_not_a_vtn_encoder(tmp_path):
    from converter.models.encoders import MobileNetV2

    classifier = torch.nn.Sequential(MobileNetV2(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                     torch.nn.Linear(1280, 1000)).eval()  # fmt: skip
    xml = tmp_path / "classifier.xml"
    frame = torch.zeros(1, 3, 224, 224)
    ov.save_model(ov.convert_model(classifier, example_input=frame, input=[1, 3, 224, 224]), str(xml))
    with pytest.raises(IRImportError, match=r"not a VTN encoder: its output is \[1, 1000\]"):
        import_encoder(xml)
    ov.save_model(ov.convert_model(classifier, example_input=frame), str(xml))  # dynamic shapes
    with pytest.raises(IRImportError, match=r"shapes must be static, got input \[\?,3,\?,\?\]"):
        import_encoder(xml)


def _save_encoder(model: VTN, path: Path) -> Path:
    class Omz(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, x):
            return self.encoder(x).view(-1, 512, 1, 1)

    omz = ov.convert_model(Omz(model.encoder.eval()), example_input=torch.zeros(1, 3, 224, 224), input=[1, 3, 224, 224])
    ov.save_model(omz, str(path))
    return path


def test_a_layer_that_does_not_fit_is_named_with_its_shapes(tmp_path):
    model = VTN(VTNConfig(arch="mobilenetv2"))
    model.encoder.backbone.features[18][0] = torch.nn.Conv2d(320, 1024, 1, bias=False)
    model.encoder.backbone.features[18][1] = torch.nn.BatchNorm2d(1024)
    model.encoder.reduce_conv = torch.nn.Conv2d(1024, 512, 1)
    xml = _save_encoder(model, tmp_path / "wide.xml")
    with pytest.raises(IRImportError, match="match none of mobilenetv2, resnet18, resnet34; pass --arch"):
        import_encoder(xml)
    with pytest.raises(IRImportError, match=r"has weights \[1024, 320, 1, 1\], but the mobilenetv2 module it must "
                       r"map to \(backbone.features.18.0\) has \[1280, 320, 1, 1\]"):  # fmt: skip
        import_encoder(xml, arch="mobilenetv2")
    with pytest.raises(IRImportError, match="has 53 convolutions; a resnet34 VTN encoder has 36"):
        import_encoder(xml, arch="resnet34")


def test_a_decoder_that_does_not_pair_with_the_encoder(tmp_path):
    import openvino.opset13 as ops

    embeddings = ops.parameter([1, 16, 256], np.float32)
    xml = tmp_path / "decoder.xml"
    ov.save_model(ov.Model([ops.reduce_mean(embeddings, [1], False)], [embeddings]), str(xml))
    with pytest.raises(IRImportError, match="takes 256-d embeddings; VTN encoders give 512-d"):
        import_decoder(xml)
    encoder_xml = _save_encoder(VTN(VTNConfig(arch="mobilenetv2")), tmp_path / "encoder.xml")
    with pytest.raises(IRImportError, match=r"not a VTN decoder: its input is \[1,3,224,224\]"):
        import_decoder(encoder_xml)


def test_labels_that_do_not_fit_the_decoder(mobilenet_omz, tmp_path):
    _, out = mobilenet_omz
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    with pytest.raises(IRImportError, match=r"has 3 labels, but the decoder classifies 5 classes"):
        import_vtn(out / "encoder.xml", out / "decoder.xml", labels=labels)


def test_the_command_line_writes_nothing_on_bad_input(tmp_path, capsys):
    target = tmp_path / "model.safetensors"
    assert converter_main(["import", "--encoder", str(tmp_path / "missing.xml"), "--out", str(target)]) == 2
    assert "missing.xml does not exist" in capsys.readouterr().err
    garbage = tmp_path / "garbage.xml"
    garbage.write_text("<net>not an IR")
    assert converter_main(["import", "--encoder", str(garbage), "--out", str(target)]) == 2
    assert "OpenVINO cannot read" in capsys.readouterr().err
    assert converter_main(["import", "--encoder", str(garbage), "--out", str(tmp_path / "x.pt")]) == 2
    assert "written as .safetensors" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.safetensors*"))


def test_projection_before_pooling_is_the_same_model(tmp_path):
    """The option an import sets: the same embeddings, the original's graph, kept by checkpoints."""
    model = _random_trained_like("mobilenetv2")
    config = VTNConfig.from_dict({**model.config.to_dict(), "project_before_pool": True, "relu6": False})
    before = VTN(config).eval()
    before.load_state_dict(model.state_dict())
    model.encoder.backbone = before.encoder.backbone  # the same ReLU backbone on both sides
    frames = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.encoder(frames), before.encoder(frames), atol=1e-5)
    reloaded = load_checkpoint(save_checkpoint(before, tmp_path / "b.safetensors"))
    assert reloaded.config.project_before_pool and not reloaded.config.relu6


def test_the_tflite_imagenet_reader_shares_the_rule_and_still_sees_the_cat(shared_data):
    """The TFLite MobileNetV2 goes through the same weight folding: its classifier still says what
    the picture shows."""
    import cv2

    from converter.models.encoders import MobileNetV2
    from converter.tflite_weights import TFLITE_MEAN, TFLITE_STD, read_tflite_mobilenetv2
    from vtn_edge.metadata import Preprocessing, read_labels

    weights = read_tflite_mobilenetv2(shared_data / "pretrained/mobilenet_v2_1.0_224_quant.tflite")
    backbone = MobileNetV2().eval()
    backbone.load_state_dict(weights.backbone)
    pre = Preprocessing(mean=TFLITE_MEAN, std=TFLITE_STD)
    image = center_crop_resize(cv2.imread(str(shared_data / "pretrained/cat.bmp")), pre)
    with torch.no_grad():
        pooled = backbone(torch.from_numpy(normalize(image[None], pre))).mean(dim=(2, 3))
        logits = pooled @ weights.classifier_weight.T + weights.classifier_bias
    labels = read_labels(shared_data / "labels/imagenet1001.txt")
    assert labels[int(logits.argmax())] == "Egyptian cat"
