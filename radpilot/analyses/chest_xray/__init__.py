"""Chest radiograph analyses (lung fields, heart, cardiothoracic ratio)."""
