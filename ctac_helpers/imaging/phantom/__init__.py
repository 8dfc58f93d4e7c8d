"""Digital CTAC phantoms: chest CT volumes whose true answers are known.

A phantom is a low-dose, non-contrast chest CT like the attenuation-correction scan of a SPECT/CT
myocardial perfusion study, drawn from geometric primitives in millimetres on any grid, with its truth
(Agatston score, EAT volume and density, structure status) taken from its own voxels. It is drawn from
plain parameters (a mapping, such as a row of a parameter table): ``parameters`` (the reference
patient and defaults), ``canvas`` (grid, arrays, shapes), ``anatomy`` (body, lungs, abdomen,
mediastinum, vessels), ``skeleton``, ``heart`` (heart, coronary arteries, epicardial and paracardial
fat), ``lesions`` (coronary calcium), ``noise`` (noise and site offset), ``truth``, ``build``
(:func:`ctac_phantom`, :func:`phantom_from_row`) and ``files`` (:func:`write_phantom`,
:func:`read_truth`). ``from_cohort`` alone reads the synthetic cohort: :func:`phantom_parameters`
turns its rows into parameters, ``params, make = phantom_cohort(n, seed)`` builds patient ``i``'s
phantom with ``make(i)``.
"""

from ctac_helpers import lazy_exports

_MODULES = ["parameters", "canvas", "anatomy", "skeleton", "heart", "lesions", "noise", "truth", "build", "files",
            "from_cohort"]
_NAMES = {
    **dict.fromkeys(["CTAC_SHAPE", "CTAC_SPACING", "DEFAULT_PARAMETERS", "filled_parameters"], "parameters"),
    **dict.fromkeys(["T_OTHER", "T_EAT", "T_PARA", "T_SAC", "T_CORONARY", "T_LESION", "T_MEDIASTINUM"], "canvas"),
    **dict.fromkeys(["LESION_MARGIN_SD", "MAX_LESION_AREA_MM2", "MIN_LESION_PIXELS", "MAX_PHANTOM_CAC",
                     "lesion_design"], "lesions"),
    **dict.fromkeys(["Phantom", "ctac_phantom", "phantom_from_row", "iter_phantoms"], "build"),
    **dict.fromkeys(["write_phantom", "read_truth"], "files"),
    **dict.fromkeys(["EAT_DENSITY_SHIFT_HU", "phantom_parameters", "phantom_cohort"], "from_cohort"),
}
__all__ = [*_MODULES, *_NAMES]
__getattr__, __dir__ = lazy_exports(__name__, _MODULES, _NAMES)
