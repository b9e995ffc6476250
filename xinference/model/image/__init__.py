"""Image models (text-to-image, image-to-image, inpainting, OCR): registration only for now."""
