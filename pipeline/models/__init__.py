"""Model zoo: importing this package registers every family."""

from pipeline.models import mobilenetv2, resnet, resnet_cifar  # noqa: F401  (registration)
from pipeline.models.card import ModelCard
from pipeline.models.registry import create_model, list_models, register_model

__all__ = ["ModelCard", "create_model", "list_models", "register_model"]
