"""`hftransfer demo`: a Gradio app for a saved folder, hub model or ONNX export (image upload or text box, top-k)."""

from __future__ import annotations

from typing import Any

from hftransfer.errors import ConfigurationError

from .summary import card_summary, training_examples


DEFAULT_HOST = "127.0.0.1"  # localhost unless told otherwise
DEFAULT_PORT = 7860


def require_gradio() -> Any:
    try:
        import gradio  # optional dependency
    except ImportError as err:
        raise ConfigurationError("the demo needs Gradio: pip install 'hftransfer[demo]'.") from err
    return gradio


def load_demo_model(model: Any) -> Any:
    """An `AutoTransfer` or `OnnxClassifier` (an export folder runs with onnxruntime)."""
    if hasattr(model, "predict"):
        return model
    from hftransfer.inference.predict import load_model_for_inference  # heavy: loads datasets

    return load_model_for_inference(model, "auto", None, False)


def build_app(model: Any, top_k: int = 3, title: str | None = None) -> Any:
    """A `gr.Interface`: image upload or text box -> `gr.Label` of the top-k labels, the card summary under it."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigurationError(f"top_k={top_k!r} must be a positive integer.")
    gr = require_gradio()
    name = str(model) if not hasattr(model, "predict") else getattr(model, "folder", "model")
    classifier = load_demo_model(model)
    k = min(top_k, classifier.num_labels)

    def predict(value: Any) -> dict[str, float]:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise gr.Error("Give an image or a text first.")
        return {p["label"]: p["score"] for p in classifier.predict([value], top_k=k)[0]}

    image = classifier.modality == "image"
    examples = training_examples(str(name), classifier.modality)
    return gr.Interface(
        fn=predict,
        inputs=gr.Image(type="pil", label="image") if image else gr.Textbox(label="text", lines=3),
        outputs=gr.Label(num_top_classes=k, label="prediction"),
        title=title or f"hftransfer demo: {name}",
        article=card_summary(str(name), classifier),
        examples=[[e] for e in examples] or None,
        cache_examples=False,
        flagging_mode="never",
        api_name="predict",
    )


def demo(model: Any, *, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT, share: bool = False,
         top_k: int = 3, block: bool = True) -> Any:
    """Serve the app on `host:port` (localhost by default; `share=True` asks Gradio for a public link).

    `block=False` returns the running app (its `local_url`) instead of serving until interrupted."""
    app = build_app(model, top_k=top_k)
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
               inbrowser=False)
    return app
