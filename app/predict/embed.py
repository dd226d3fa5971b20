"""`/embed`: unit-length image and text vectors from a trained model or a base model."""

from __future__ import annotations

from app.inference import engine
from app.predict.inputs import check_image_count, check_texts, decode_base64_images
from app.predict.schemas import EmbedRequest, EmbedResponse
from app.predict.serving import Serving


def answer(*, serving: Serving, embed_in: EmbedRequest) -> EmbedResponse:
    """The request's images and texts embedded in one space, in request order."""
    check_image_count(len(embed_in.images), serving.settings)
    check_texts(embed_in.texts, serving.settings)
    if embed_in.model_id is not None:
        cached = serving.trained_model(serving.find_models([embed_in.model_id])[0])
    else:
        assert embed_in.base_model is not None
        cached = serving.base_model(embed_in.base_model)
    pixels = (
        serving.pixels(decode_base64_images(images=embed_in.images), spec=cached.pixel_spec)
        if embed_in.images
        else None
    )
    images, texts = engine.embed(cached, pixels, embed_in.texts or None)
    dimension = int((images if images is not None else texts).shape[1])  # type: ignore[union-attr]
    return EmbedResponse(
        model_id=embed_in.model_id,
        base_model=embed_in.base_model,
        dimension=dimension,
        image_embeddings=images.tolist() if images is not None else [],
        text_embeddings=texts.tolist() if texts is not None else [],
    )
