"""The site: Flower ClientApp and local DP-SGD training."""
