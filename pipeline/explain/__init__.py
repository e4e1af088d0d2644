"""What the transferred classifier learned: saliency maps (MONAI ``monai.visualize``: Grad-CAM,
Grad-CAM++, occlusion sensitivity), the encoder's feature space before and after fine-tuning
(PCA / t-SNE, linear-probe AUCs) and the first convolution's filters before and after.

Modules: :mod:`.config` (``explain:`` params), :mod:`.saliency` (maps, inside-nodule share),
:mod:`.features` (pooled features, embeddings, linear probe, first-conv filters),
:mod:`.figures` (PNGs), :mod:`.stage` (the ``explain`` stage core), :mod:`.detect` (maps for the
top findings of a ``detect`` output folder), :mod:`.cli`.
"""
