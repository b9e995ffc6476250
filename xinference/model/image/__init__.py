"""Image models: text-to-image, image-to-image and inpainting on diffusers
(:mod:`.diffusers_engine`), OCR on rapidocr's bundled PP-OCR models (:mod:`.ocr`)."""
