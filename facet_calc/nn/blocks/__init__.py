"""Building blocks shared by the model families: spline radial tables, the equivariant
convolution (e3nn reference and fused fast path), linears, gates, the spherical-grid mixer,
residuals and activations. Each fast block has a reference twin; ``nn.backend`` picks one."""
