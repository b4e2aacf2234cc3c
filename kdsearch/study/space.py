"""Facts about a study's search space that need neither Ray nor Optuna: the longest trial it allows and the
first trial's point (kd_reference's settings). `space` is the study's {name: schema.Param}."""


def space_epochs(space, kd_reference):
    """The longest a trial can run: the space's largest epoch count, or kd_reference's when not searched."""
    p = space.get("epochs")
    if p is None:
        return kd_reference.epochs
    return int(max(p.values) if p.type == "choice" else p.high)


def first_point(space, kd_reference, log):
    """kd_reference's settings (by default the notebook's T 4.5, alpha 0.8, lr 1e-3), moved to the nearest
    point of the space, so that the first trial is the reference."""
    point = {}
    for name in sorted(space, key=lambda n: n != "loss"):  # the loss first: the other values depend on it
        p, value = space[name], getattr(kd_reference, name)
        if p.losses is not None and point.get("loss", kd_reference.loss) not in p.losses:
            continue  # not a value of the first trial's loss
        if value is None and not (p.type == "choice" and None in p.values):
            continue  # kd_reference has none (a loss's default, say): Optuna draws it
        if p.type == "choice" and value not in p.values and (value is None or isinstance(value, (str, bool))):
            clipped = p.values[0]  # no nearest: the first listed
        elif p.type == "choice":
            clipped = value if value in p.values else min(p.values, key=lambda v: abs(v - value))
        else:
            clipped = min(max(value, p.low), p.high)
        if p.type == "int":
            step = p.step or 1
            clipped = min(int(p.low + round((clipped - p.low) / step) * step), int(p.high))
        if clipped != value:
            log(f"search: kd_reference's {name} = {value} lies outside the space; the first trial uses {clipped}")
        point[name] = clipped
    return point
