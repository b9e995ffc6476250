"""Video models (text-to-video, image-to-video): registration only for now."""
