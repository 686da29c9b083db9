"""DDSM tree -> cases rows: one row per abnormality outline, its mask drawn from the chain
code (PNG written by ingest), image kept as the source .LJPEG."""
import os
import warnings

from tqdm import tqdm

from deepmammo.sources import ddsm, ljpeg
from deepmammo.sources.cases import Case
from deepmammo.sources.ingestion import describe_error


def _check_ljpeg(path, view, decode):
    """None when the .LJPEG looks usable, else the reason."""
    try:
        if decode:
            ddsm.read_ljpeg(path, view.shape)
        else:
            ljpeg.check_file(path, view.shape, view.bits_per_pixel)
    except (ljpeg.LJPEGError, OSError) as exc:
        return describe_error(exc)
    except Exception as exc:  # a corrupt stream must land in the report, not stop the ingest
        return f"{path}: unreadable LJPEG ({type(exc).__name__}: {exc})"
    return None


def collect(root, ctx):
    for case in tqdm(list(ddsm.walk_ddsm(root)), desc="DDSM cases", unit="case",
                     disable=None):
        if case.ics_path is None:   # view files whose case folder has no .ics
            for path in case.orphans:
                ctx.skip(os.path.basename(case.folder), path,
                         f"no .ics file for this case in {case.folder}", "missing .ics")
            continue
        with ctx.guard(os.path.basename(case.folder), case.ics_path):
            _collect_case(case, ctx)


def _collect_case(case, ctx):
    try:
        ics = ddsm.read_ics(case.ics_path)
    except (ddsm.ICSError, OSError, UnicodeDecodeError) as exc:
        ctx.skip(os.path.basename(case.folder), case.ics_path,
                 f"broken .ics: {describe_error(exc)}", "broken .ics")
        return
    for note in case.notes:
        ctx.fixed(ics.name, case.ics_path, note, "misplaced file")
    # An overlay for a view the .ics does not describe has no image size to decode against:
    # report it rather than drop it unseen.
    for view_name in sorted(set(case.overlays) - set(ics.views)):
        ctx.skip(f"{ics.name}_{view_name}", case.overlays[view_name],
                 f"the .ics lists no {view_name} view for this .OVERLAY", "overlay not in .ics")
    for view_name, view in ics.views.items():
        overlay_path = case.overlays.get(view_name)
        label = f"{ics.name}_{view_name}"
        if overlay_path is None:
            if view.has_overlay:
                ctx.skip(label, case.ics_path, f"the .ics lists an overlay for {view_name} "
                                               "but no .OVERLAY file was found", "missing .OVERLAY")
            continue
        if not view.has_overlay:
            ctx.fixed(label, overlay_path, "overlay present although the .ics says NON_OVERLAY",
                      "overlay not in .ics")
        try:
            abnormalities = ddsm.read_overlay(overlay_path)
        except (ddsm.OverlayError, OSError, UnicodeDecodeError) as exc:
            ctx.skip(label, overlay_path, f"broken .OVERLAY: {describe_error(exc)}",
                     "broken .OVERLAY")
            continue
        image_path = case.ljpegs.get(view_name)
        if image_path is None:
            # Name the file that should be there: <CASE_NAME>.<VIEW>.LJPEG beside the .ics.
            stem = os.path.basename(overlay_path).split(".")[0]
            image_path = os.path.join(case.folder, f"{stem}.{view_name}.LJPEG")
            problem = f"{image_path}: {view_name} image (.LJPEG) not found"
        else:
            problem = _check_ljpeg(image_path, view, ctx.decode_check)
        for abn in abnormalities:
            _collect_abnormality(ics, view, abn, image_path, overlay_path, problem, ctx)


def _collect_abnormality(ics, view, abn, image_path, overlay_path, image_problem, ctx):
    case_id = f"{ics.name}_{view.name}_{abn.number}"
    lesion = "MASS" if abn.is_mass else abn.lesion_type
    if not ctx.wants_lesion(case_id, overlay_path, lesion):
        return
    label = ctx.label_or_exclude(case_id, overlay_path, abn.pathology)
    if label is None:
        return
    if image_problem:
        ctx.skip(case_id, image_path, image_problem, "bad or missing .LJPEG")
        return
    if abn.declared_outlines is not None and abn.declared_outlines > len(abn.outlines):
        ctx.fixed(case_id, overlay_path, f"TOTAL_OUTLINES says {abn.declared_outlines}, "
                                         f"{len(abn.outlines)} present; used what is there",
                  "outline count")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ddsm.OutlineClippedWarning)
        mask = ddsm.outline_mask(abn.boundary, view.shape)
    for w in caught:
        if issubclass(w.category, ddsm.OutlineClippedWarning):
            ctx.fixed(case_id, overlay_path, f"outline clipped: {w.message}", "outline clipped")
    side, v = view.name.split("_")
    case = Case(
        case_id=case_id, patient_id=ics.name, side=side, view=v, abnormality_id=abn.number,
        source="ddsm", image=os.path.abspath(image_path), image_format="LJPEG",
        pathology=abn.pathology, label=label, lesion_type=lesion, shape=abn.shape,
        margins=abn.margins, calc_type=abn.calc_type, calc_distribution=abn.distribution,
        assessment=abn.assessment, subtlety=abn.subtlety, density=ics.density,
        scanner=ics.scanner, bits=view.bits_per_pixel, rows=view.lines,
        cols=view.pixels_per_line)
    ctx.add_case(case, mask=mask, mask_file_for_report=overlay_path)
