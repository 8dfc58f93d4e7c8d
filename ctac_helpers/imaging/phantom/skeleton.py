"""The skeleton of the chest: vertebrae T1-L2 with discs, spinal canal and cord, the back muscles, twelve
ribs a side with their costal cartilages, and the sternum.

The painters take the canvas and the anatomy, as those of :mod:`~ctac_helpers.imaging.phantom.anatomy` do.
"""

from __future__ import annotations

import numpy as np

from ctac_helpers.imaging.phantom.anatomy import Anatomy
from ctac_helpers.imaging.phantom.canvas import T_OTHER, Canvas, empty_box, paint_slab_ellipse


def paint_spine(b: Canvas, an: Anatomy):
    """Vertebrae T1-L2 (cortical shell, cancellous core, arch and processes), discs, canal, cord."""
    p, g, ids, hs = b.p, b.g, b.ids, an.hs
    # Cortical shell and cancellous core, set so that a whole vertebra's mean is ~vertebra_hu.
    cortical = p["vertebra_hu"] + 250.0
    cancellous = p["vertebra_hu"] - 110.0
    posterior = p["vertebra_hu"] + 40.0
    levels = [f"vertebrae_T{i}" for i in range(1, 13)] + ["vertebrae_L1", "vertebrae_L2"]
    h = 24.0 * hs
    z_t1 = 165.0 * hs
    yb, yc = an.y_vb, an.y_canal
    # Autochthonous back muscles, either side of the spinous processes, all slices.
    scale = float(p["autochthon_scale"]) ** 0.5
    for name, side in (("autochthon_left", 1.0), ("autochthon_right", -1.0)):
        cx, cy, rx, ry = side * 30.0 * scale, yc + 15.0, 21.0 * scale, 17.0 * scale
        paint_slab_ellipse(b, cx, cy, rx, ry, -1e4, 1e4, p["muscle_hu"], ids[name])
    # The canal (CSF) and the cord first: every slice.
    paint_slab_ellipse(b, 0.0, yc, 9.0, 8.0, -1e4, 1e4, 8.0)
    paint_slab_ellipse(b, 0.0, yc, 5.0, 4.5, -1e4, 1e4, p["cord_hu"], ids["spinal_cord"])
    for i, name in enumerate(levels):
        zc = z_t1 - i * h
        if zc + h / 2 < g.z[0] - 5 or zc - h / 2 > g.z[-1] + 5:
            continue
        grow = 1.0 + 0.03 * i
        rx, ry = 17.0 * grow, 14.0 * grow
        z0, z1 = zc - h / 2 + 3.0, zc + h / 2 - 3.0
        # Disc below the body.
        paint_slab_ellipse(b, 0.0, yb, rx, ry, zc - h / 2 - 3.0, z0, 80.0)
        sl, Z, Y, X = g.box((-45.0, yb - ry - 1, z0), (45.0, yc + 40.0, z1))
        if empty_box(sl):
            continue
        e = ((X / rx) ** 2 + ((Y - yb) / ry) ** 2)
        body_out = e <= 1.0
        body_in = ((X / (rx - 2.0)) ** 2 + ((Y - yb) / (ry - 2.0)) ** 2) <= 1.0
        rc = np.sqrt(X ** 2 + (Y - yc) ** 2)
        arch = (rc >= 9.0) & (rc <= 15.0) & (Y >= yb + ry - 3.0)
        spinous = (np.abs(X) <= 3.5) & (Y >= yc + 12.0) & (Y <= yc + 36.0) & (Z <= z1 - 0.2 * (Y - yc))
        transverse = (np.abs(Y - yc) <= 4.0) & (np.abs(X) >= 9.0) & (np.abs(X) <= 33.0)
        shape = np.broadcast_to(body_out | arch | spinous | transverse, (Z.shape[0],) + e.shape[1:])
        vals = np.where(body_out, np.where(body_in, cancellous, cortical), posterior).astype(np.float32)
        b.paint(sl, shape, np.broadcast_to(vals, shape.shape), ids[name], clear_peri=True)


def _rib_z(theta_abs, z_head, drop, theta_end):
    return z_head - drop * np.clip(theta_abs / theta_end, 0, 1) ** 1.4


def paint_ribs(b: Canvas, an: Anatomy):
    """Twelve ribs a side and the costal cartilages in the chest wall, and the sternum."""
    p, g, ids, hs = b.p, b.g, b.ids, an.hs
    X, Y = np.meshgrid(g.x, g.y)
    # Distance outward from the cavity boundary, approximately, and the angle from the spine.
    rho = np.sqrt(b.rho_cav)
    theta = np.arctan2(X, Y)  # 0 posterior, +pi/2 left, +-pi anterior
    r_eff = np.sqrt((an.cx * np.sin(theta)) ** 2 + (an.cy * np.cos(theta)) ** 2)
    d = (rho - 1.0) * r_eff
    ring = (d >= 1.0) & (d <= 8.0)
    jj, ii = np.nonzero(ring)
    th = theta[jj, ii]
    th_abs = np.abs(th)
    side_left = th > 0
    h = 24.0 * hs
    z_t1 = 165.0 * hs
    bone = p["bone_hu"]
    cart = p["cartilage_hu"]
    sternum_top, sternum_bottom = 118.0 * hs, -45.0 * hs
    theta_st = np.pi - np.arctan2(16.0, an.cy)
    for k in range(1, 13):
        z_head = z_t1 - (k - 1) * h + 4.0
        drop = (40.0 + 3.5 * k) * hs
        theta_end = np.deg2rad(min(150.0, 105.0 + 7.0 * k)) if k <= 10 else np.deg2rad(95.0 + 5 * (12 - k))
        theta_start = 0.32
        zr = _rib_z(th_abs, z_head, drop, theta_end)
        on = (th_abs >= theta_start) & (th_abs <= theta_end)
        hh = 4.5 * hs
        if k <= 10:
            # Costal cartilage from the rib's end towards the sternum (ribs 8-10 join the one above).
            z_end = z_head - drop
            if k <= 7:
                z_st = sternum_top - 12.0 - (k - 1) * (sternum_top - 12.0 - sternum_bottom - 20.0) / 6.0
                th_st = theta_st
            else:
                z_st = z_end + 20.0
                th_st = np.pi - 0.55 + 0.07 * (k - 8)
            on_c = (th_abs > theta_end) & (th_abs <= th_st)
            zc = z_end + (z_st - z_end) * np.clip((th_abs - theta_end) / max(th_st - theta_end, 1e-3), 0, 1)
        else:
            on_c = np.zeros_like(on)
            zc = zr
        for kk, z in enumerate(g.z):
            m = on & (np.abs(z - zr) <= hh)
            mc = on_c & (np.abs(z - zc) <= hh * 0.9)
            if m.any():
                for left in (True, False):
                    sel = m & (side_left == left)
                    if sel.any():
                        name = f"rib_{'left' if left else 'right'}_{k}"
                        b.hu[kk, jj[sel], ii[sel]] = bone
                        b.lab[kk, jj[sel], ii[sel]] = ids[name]
                        b.tis[kk, jj[sel], ii[sel]] = T_OTHER
                        b.peri[kk, jj[sel], ii[sel]] = False
            if mc.any():
                b.hu[kk, jj[mc], ii[mc]] = cart
                b.lab[kk, jj[mc], ii[mc]] = ids["costal_cartilages"]
                b.tis[kk, jj[mc], ii[mc]] = T_OTHER
    # Sternum: a plate in the anterior chest wall at the midline.
    st = ring & (np.abs(X) <= 17.0) & (Y < 0)
    jj, ii = np.nonzero(st)
    for kk, z in enumerate(g.z):
        if sternum_bottom <= z <= sternum_top:
            half = 17.0 if z > sternum_top - 45.0 * hs else 13.0
            sel = np.abs(g.x[ii]) <= half
            b.hu[kk, jj[sel], ii[sel]] = bone - 60.0
            b.lab[kk, jj[sel], ii[sel]] = ids["sternum"]
            b.tis[kk, jj[sel], ii[sel]] = T_OTHER
