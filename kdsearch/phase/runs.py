"""One model trained by a recipe (a RunSpec), or read back from the store when the same run was done before;
its record is core.records.Run."""
import dataclasses
import time
from dataclasses import dataclass

from kdsearch.core.errors import UserError
from kdsearch.core.progress import progress
from kdsearch.core.records import Run
from kdsearch.engine.loop import Lesson, evaluate, new_model, train
from kdsearch.engine.models import count_params


@dataclass(frozen=True)
class RunSpec:
    """A run to make: its name, recipe (schema.Recipe), seed (initialisation and batch order) and store key."""
    name: str
    recipe: object
    seed: int
    key: str
    kind: str = "runs"  # the store's folder: runs, or teacher

    def save(self, store, model, history, test_acc, train_s, start=None):
        """Store the model trained by this spec with its Run (start: its starting weights' accuracies); return
        the Run."""
        run = Run(model=self.name, key=self.key, params=count_params(model), val_acc=history[-1]["val_acc"],
                  test_acc=test_acc, train_s=train_s, history=history, config=dataclasses.asdict(self.recipe),
                  seed=self.seed, start=start)
        store.save_run(self.kind, self.key, model, run.to_json())
        return run


def train_or_load(ctx, spec, make_table=None):
    """Return (model, Run), on the data's device, for `spec` in the study `ctx`. make_table: a function of the
    recipe's mix that returns the teacher's logit table of those views, called only when the run is trained (a
    stored run needs none). The views are the study's, mixed as the recipe says."""
    data, log, recipe = ctx.data, ctx.log, spec.recipe
    stored = ctx.store.load_run(spec.kind, spec.key)
    model = new_model(ctx.networks, recipe.model, spec.seed, data.train.x.device, start=stored is None)
    if stored is not None:
        model.load_state_dict(stored.state)
        log(f"{spec.name}: reusing the stored run {spec.kind}/{spec.key} (val {stored.run.val_acc:.2f}%)")
        return model, stored.run
    log(f"{spec.name}: training {recipe.model} with {recipe.loss} for {recipe.epochs} epochs on {len(data.train)} "
        f"images")

    before = starting_accuracies(ctx, model, recipe.model, spec.seed)
    start = time.perf_counter()
    views = ctx.views_of(recipe.mix, repeat=spec.kind != "teacher", role=recipe.model)
    lesson = Lesson(data.train, views, data.val, make_table(recipe.mix) if make_table else None)
    with progress(recipe.epochs, spec.name, log) as bar:
        def report(m, state):
            status = f"loss {m['train_loss']:.4f} val {m['val_acc']:.2f}%"
            bar.step(f"{spec.name}: epoch {m['epoch']}/{recipe.epochs} {status} ({m['time_s']:.0f} s)", status)
        history = train(model, recipe, lesson, seed=spec.seed, report=report)
    if history[-1].get("diverged"):
        raise UserError(f"{spec.name} diverged in epoch {len(history)} (its loss became NaN or infinite) with lr "
                        f"{recipe.lr}; fix: lower {spec.name}'s lr in the study file")
    return model, spec.save(ctx.store, model, history, evaluate(model, data.test, views),
                            time.perf_counter() - start, before)


def starting_accuracies(ctx, model, role, seed):
    """{val_acc, test_acc} of a network of `role` that starts from weights (pretrained or init) before its
    training, the measure of what the fine-tuning gave; None for a random start. Measured once per role and seed
    (the student baselines all start from the same weights, their fresh head seeded alike)."""
    net = getattr(ctx.networks, role)
    if not (net.weights or net.init):
        return None
    key = (net.key, seed)  # the students of a study each have their own
    if key not in ctx.starts:
        accs = {"val_acc": evaluate(model, ctx.data.val, ctx.fed(role)),
                "test_acc": evaluate(model, ctx.data.test, ctx.fed(role))}
        ctx.log(f"models.{role}: its starting weights (seed {seed}) score val {accs['val_acc']:.2f}% / test "
                f"{accs['test_acc']:.2f}% before training")
        ctx.starts[key] = accs
    return ctx.starts[key]
