"""reorient: a volume's voxels in RAS+ canonical order."""

from __future__ import annotations

from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes

from services.processor.imaging import geometry, views
from services.processor.imaging.image import Image
from services.processor.operations.registry import Operation, register
from services.processor.operations.schema import params_schema


def reorient(image: Image, params: dict[str, Any]) -> Image:
    """The same voxels flipped and permuted so that the voxel axes run to the patient's Right,
    Anterior and Superior (as nibabel's ``as_closest_canonical``); the affine follows, so every
    voxel stays where it was in the patient."""
    affine = image.affine if image.affine is not None else np.eye(4)
    data, new_affine = views.canonical(image.data, affine)
    out = image.with_data(
        np.ascontiguousarray(data), affine=new_affine, spacing=geometry.voxel_sizes(new_affine)
    )
    out.metadata.update(
        orientation_before="".join(aff2axcodes(affine)), orientation_after="".join(aff2axcodes(new_affine))
    )
    return out


register(
    Operation(
        name="reorient",
        title="Reorient to RAS+",
        description="Reorders a volume's voxels to the closest RAS+ canonical orientation (voxel axes "
        "towards the patient's Right, Anterior, Superior), as nibabel's as_closest_canonical: flips and "
        "axis swaps only, no resampling, each voxel keeps its position in the patient.",
        params_schema=params_schema({}),
        outputs=".nii.gz plus axial, coronal and sagittal PNG previews (a DICOM series ZIP with "
        "output_format=dicom for DICOM inputs)",
        apply=reorient,
        kinds=("3d",),
        formats=("dicom", "nifti", "dicom_series"),
    )
)
