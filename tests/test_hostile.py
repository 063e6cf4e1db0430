"""Issue 27's routes to points without solving, each a submission graded as a cohort's would be: each scores 0.

Every route that earned points against the grader whose checks shared the
learner's process (IPython transformers that drop ``assert``, rebound built-ins,
patched ``torch.allclose``, values that compare equal to anything, expected
values read from the namespace, the recorder dodged through ``<frozen ...>`` code,
``torch.ops.aten`` or ``exec``, library copies of the computation, tensor methods
that run the forbidden kernel) is built here on the untouched exercise of its
chapter, and the batch is graded once, sandboxed, as ``python -m lmcourse grade``
grades it. Beside them, honest answers whose names collide with what a check
imports keep their points.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from chapter_grades import _pool

from lmcourse.course.check_pool import CheckPool
from lmcourse.course.exercises import EXERCISES_DIR, SOLUTIONS_DIR, cell_info
from lmcourse.course.grade import grade_notebooks

pytestmark = pytest.mark.slow  # grades a batch of notebooks

RMS = "def rms_norm(x, weight, eps=1e-6):\n"
ADD, ANSWER = "add", "answer"

# name: (chapter, [(ADD, cell source) | (ANSWER, task, solution cell source)])
HOSTILE = {
    "ipython_ast_transformer_drops_asserts": ("11", [(ADD, (
        "import ast\nclass NoAssert(ast.NodeTransformer):\n    def visit_Assert(self, node):\n"
        "        return ast.Pass()\nget_ipython().ast_transformers.append(NoAssert())"))]),
    "ipython_input_transformer": ("11", [(ADD, (
        "get_ipython().input_transformers_post.append(\n"
        "    lambda lines: [l.replace('assert ', 'pass  # ') for l in lines])"))]),
    "ipython_run_cell_replaced": ("05", [(ADD, "ip = get_ipython()\nip.run_cell = lambda *a, **k: None")]),
    "magic_shell_escape": ("05", [(ADD, "%env X=1\n!ls /")]),
    "gc_reads_runner_globals": ("11", [(ADD, (
        "import gc\nfor o in gc.get_objects():\n    if isinstance(o, dict) and 'token' in o:\n"
        "        print(o['token'])"))]),
    "builtins_rebound": ("05", [(ADD, "all = lambda *a: True\nisinstance = lambda *a: True\nabs = lambda x: 0")]),
    "allclose_patched_during_the_call": ("11", [(ANSWER, "rms_norm", (
        RMS + "    torch.allclose = lambda *a, **k: True\n    return x"))]),
    "tensor_subclass_equal_to_anything": ("11", [(ANSWER, "rms_norm", (
        "class Yes(torch.Tensor):\n    @classmethod\n"
        "    def __torch_function__(cls, func, types, args=(), kwargs=None):\n        return True\n\n\n"
        + RMS + "    return x.as_subclass(Yes)"))]),
    "tensor_subclass_without_overrides": ("11", [(ANSWER, "rms_norm", (
        "class Plain(torch.Tensor):\n    pass\n\n\n" + RMS + "    return x.as_subclass(Plain)"))]),
    "float_subclass_equal_to_anything": ("11", [(ANSWER, "copying", (
        "class Eq(float):\n    def __eq__(self, other):\n        return True\n    def __lt__(self, other):\n"
        "        return True\n\n\ndef later_vs_first(nll, text, known):\n    return Eq(0.0), Eq(0.0)"))]),
    "expected_values_from_the_namespace": ("11", [(ANSWER, "copying", (
        "def later_vs_first(nll, text, known):\n    return ref['first']['nats'], ref['later']['nats']"))]),
    "frozen_file_name_dodges_the_recorder": ("11", [(ANSWER, "rms_norm", (
        "exec(compile('def rms_norm(x, w, eps=1e-6):\\n    return torch.rms_norm(x, (x.shape[-1],), w, eps)',"
        " '<frozen rms>', 'exec'))"))]),
    "aten_operator": ("11", [(ANSWER, "rms_norm", (
        RMS + "    return torch.ops.aten.rms_norm(x, [x.shape[-1]], weight, eps)"))]),
    "original_from_the_recorders_closure": ("11", [(ANSWER, "rms_norm", (
        RMS + "    f = torch.rms_norm.__closure__[0].cell_contents\n    return f(x, (x.shape[-1],), weight, eps)"))]),
    "exec_into_a_library_module": ("11", [(ADD, (
        "import lmcourse.optim as O\nexec('def orthogonalise(G, steps=5):\\n    return newton_schulz(G, steps)',"
        " vars(O))\northogonalise = O.orthogonalise"))]),
    "setup_alias_of_the_forbidden_function": ("11", [(ANSWER, "rms_norm", (
        RMS + "    return F.rms_norm(x, (x.shape[-1],), weight, eps)"))]),
    "name_built_at_run_time": ("11", [(ANSWER, "rms_norm", (
        RMS + "    return getattr(F, 'rms' + '_norm')(x, (x.shape[-1],), weight, eps)"))]),
    "import_by_string": ("11", [(ANSWER, "rms_norm", (
        RMS + "    F2 = __import__('torch.nn.functional', fromlist=['x'])\n"
        "    return F2.rms_norm(x, (x.shape[-1],), weight, eps)"))]),
    "hugging_face_copy": ("11", [(ANSWER, "rms_norm", (
        "from transformers.models.llama.modeling_llama import LlamaRMSNorm\n\n\n" + RMS
        + "    m = LlamaRMSNorm(x.shape[-1], eps)\n    m.weight.data = weight\n    return m(x)"))]),
    "package_sibling_of_another_task": ("11", [(ANSWER, "muon", (
        "from lmcourse.optim import newton_schulz\nMUON_ABC = (3.4445, -4.7750, 2.0315)\n\n\n"
        "def ns_step(X, a, b, c):\n    A = X @ X.T\n    return a * X + (b * A + c * A @ A) @ X\n\n\n"
        "def orthogonalise(G, steps=5):\n    return newton_schulz(G, steps=steps, dtype=G.dtype)"))]),
    "private_alias": ("05", [(ANSWER, "base", (
        "def smallest_base(d_head, base, trained, longer):\n"
        "    return float(torch._C._nn.smallest_base(base))"))]),
    "mistral_copy_of_llama_rope": ("05", [(ANSWER, "port", (
        "from transformers.models.mistral.modeling_mistral import apply_rotary_pos_emb\n\n\n"
        "def to_half_split(w, n_heads, rot):\n    return w"))]),
    "tensor_method_runs_the_forbidden_kernel": ("09", [(ANSWER, "gumbel", (
        "def gumbel_sample(logits, temperature, gen):\n    p = torch.softmax(logits / temperature, dim=-1)\n"
        "    return p.multinomial(1, generator=gen).squeeze(-1)"))]),
    "library_sibling_runs_the_forbidden_kernel": ("09", [(ANSWER, "gumbel", (
        "def gumbel_sample(logits, temperature, gen):\n"
        "    d = torch.distributions.OneHotCategorical(logits=logits / temperature)\n"
        "    return d.sample().argmax(dim=-1)"))]),
    "categorical_distribution": ("09", [(ANSWER, "gumbel", (
        "def gumbel_sample(logits, temperature, gen):\n"
        "    return torch.distributions.Categorical(logits=logits / temperature).sample()"))]),
    "forward_mode_autodiff": ("06", [(ANSWER, "tied_grad", (
        "def tied_grad(E, x, y, scale, cap):\n"
        "    loss = lambda W: F.cross_entropy(cap * torch.tanh(scale * W[x] @ W.T / cap), y)\n"
        "    return torch.func.jacfwd(loss)(E)"))]),
    # a blind red team's routes against the first version of this grader (all refused since)
    "builtins_through_attrgetter_then_a_thread": ("11", [(ANSWER, "rms_norm", (
        "import operator\nU = chr(95) * 2\nB = operator.attrgetter(U + 'self' + U)(print)\n"
        "IMP = operator.attrgetter(U + 'import' + U)(B)\nPOOL = IMP('concurrent.futures', fromlist=['x'])"
        ".ThreadPoolExecutor(1)\n\n\n" + RMS
        + "    f = operator.attrgetter('nn.functional.rms' + chr(95) + 'norm')(torch)\n"
        "    return POOL.submit(f, x, (x.shape[-1],), weight, eps).result()"))]),
    "attribute_read_by_a_class_pattern": ("11", [(ANSWER, "rms_norm", (
        RMS + "    match torch:\n        case object(ops=o):\n"
        "            return o.aten.rms_norm(x, [x.shape[-1]], weight, eps)"))]),
    "forbidden_name_behind_an_indirection": ("11", [(ANSWER, "rms_norm", (
        RMS + "    return (F,)[0].rms_norm(x, (x.shape[-1],), weight, eps)"))]),
    "another_functions_globals_through_a_frame": ("11", [(ANSWER, "rms_norm", (
        "def probe():\n    yield 1\n\n\n" + RMS
        + "    g = probe()\n    found = g.gi_frame.f_back.f_globals\n    return x * weight"))]),
    "class_made_from_a_dict": ("11", [(ANSWER, "copying", (
        "Eq = type('Eq', (float,), {'x': 1})\n\n\ndef later_vs_first(nll, text, known):\n"
        "    return Eq(1.0), Eq(2.0)"))]),
    # a second blind red team's routes (refused since)
    "annotation_string_evaluated_by_singledispatch": ("09", [(ANSWER, "min_p", (
        "import functools\n\nFOUND = []\n\n\n@functools.singledispatch\ndef sd(x):\n    return x\n\n\n"
        "def hook(x: \"(FOUND.append(__import__('lmcourse.decoding').decoding.min_p_filter), int)[1]\"):\n"
        "    return x\n\n\ndef min_p_rows(logits, min_p):\n    if not FOUND:\n        sd.register(hook)\n"
        "    return torch.cat([FOUND[0](logits[i:i + 1], float(min_p[i])) for i in range(len(logits))])"))]),
    "forbidden_module_run_in_a_data_loader_worker": ("09", [(ANSWER, "gumbel", (
        "def draw(probs):\n    return torch.distributions.OneHotCategorical(probs).sample().argmax(dim=-1)\n\n\n"
        "def gumbel_sample(logits, temperature, gen):\n    probs = torch.softmax(logits / temperature, dim=-1)\n"
        "    loader = torch.utils.data.DataLoader([probs], batch_size=None, num_workers=1, collate_fn=draw)\n"
        "    return next(iter(loader)).clone()"))]),
    "torch_gumbel_softmax": ("09", [(ANSWER, "gumbel", (
        "def gumbel_sample(logits, temperature, gen):\n"
        "    return torch.nn.functional.gumbel_softmax(logits / temperature, tau=1.0, hard=True).argmax(dim=-1)"))]),
    "rms_norm_through_layer_norm": ("11", [(ANSWER, "rms_norm", (
        RMS + "    D = x.shape[-1]\n    y = F.layer_norm(torch.cat([x, -x], dim=-1), (2 * D,), eps=eps)\n"
        "    return y[..., :D] * weight"))]),
    # a third blind red team's routes (refused since)
    "a_module_reexported_by_torch": ("11", [(ANSWER, "rms_norm", (
        RMS + "    imp = torch.sys.modules['importlib'].import_module\n"
        "    f = imp('pydoc').locate('torch.nn.functional.' + 'rms_norm')\n"
        "    with imp('concurrent.futures').ThreadPoolExecutor(1) as ex:\n"
        "        return ex.submit(f, x, (x.shape[-1],), weight, eps).result()"))]),
    "torch_sibling_of_the_causal_mask": ("04", [(ANSWER, "window_mask", (
        "def sliding_window_mask(T, window):\n    if window < 1:\n        raise ValueError('window')\n"
        "    m = torch.nn.Transformer.generate_square_subsequent_mask(T) == 0\n"
        "    return m & ~torch.ones(T, T, dtype=torch.bool).tril(-window)"))]),
    # a fourth blind red team's library siblings (forbidden since)
    "rms_norm_through_instance_norm": ("11", [(ANSWER, "rms_norm", (
        RMS + "    D = x.shape[-1]\n    z = torch.cat([x, -x], dim=-1).reshape(-1, 1, 2 * D)\n"
        "    return F.instance_norm(z, eps=eps)[:, 0, :D].reshape(x.shape) * weight"))]),
    "reads_solutions_from_disk": ("05", [(ADD, "print(open('/work/main/solutions/05_positions.ipynb').read()[:10])")]),
}

# Each route starts from plausible wrong answers, well-typed values that pass no check on their own (so a
# route that silenced or fooled the checks would earn points with them); a route's own answer replaces one.
DUMMY = {
    "05": {"port": "def to_half_split(w, n_heads, rot):\n    return w",
           "diagnose": "def angle_gap(freqs, trained, longer, new_freqs=None):\n"
                       "    return torch.zeros(len(freqs), dtype=torch.float64)",
           "base": "def smallest_base(d_head, base, trained, longer):\n    return float(base)"},
    "08": {"gqa": "def gqa_from_mha(qkv_weight, qkv_bias, proj_weight, groups):\n"
                  "    return qkv_weight, qkv_bias, proj_weight",
           "kivi": "class KiviCache:\n"
                   "    def __init__(self, group, bits=2):\n        self.group = group\n\n"
                   "    def append(self, k, v):\n        return k, v",
           "streaming": "class SinkWindowCache:\n"
                        "    def __init__(self, n_sink, window, batch_size, n_heads, d_head, dtype=torch.float32):\n"
                        "        self.k = torch.zeros(batch_size, n_heads, n_sink + window, d_head, dtype=dtype)\n"
                        "        self.v = torch.zeros_like(self.k)\n\n"
                        "    def attend(self, q, k, v):\n        return v"},
    "06": {"factorise": "def factorise_tied(A, W, budget):\n"
                        "    k = max(1, budget // (A.shape[0] + 2 * A.shape[1]))\n"
                        "    P = torch.eye(k, A.shape[1], dtype=A.dtype)\n"
                        "    return A[:, :k].clone(), P, P.clone()",
           "param_count": "def count_params(config):\n    return 0",
           "tied_grad": "def tied_grad(E, x, y, scale, cap):\n    return torch.zeros_like(E)"},
    "04": {"window_mask": "def sliding_window_mask(T, window):\n    return torch.ones(T, T, dtype=torch.bool)",
           "mha": "def causal_mha(x, w_qkv, b_qkv, w_out, b_out, n_heads):\n"
                  "    return x.mean(dim=1, keepdim=True).expand_as(x)",
           "leak": "def first_leak(attn, T, D):\n    return 1"},
    "09": {"min_p": "def min_p_rows(logits, min_p):\n    return logits",
           "penalties": "def penalise(logits, previous_ids, frequency, presence):\n    return logits",
           "gumbel": "def gumbel_sample(logits, temperature, gen):\n    return logits.argmax(dim=-1)"},
    "11": {"rms_norm": RMS + "    return x * weight",
           "swiglu": "def swiglu(x, w_gate, w_up, w_down):\n    return x\n\n\n"
                     "def swiglu_hidden(d_model):\n    return 1",
           "muon": "MUON_ABC = (3.4445, -4.7750, 2.0315)\n\n\ndef ns_step(X, a, b, c):\n    return X\n\n\n"
                   "def orthogonalise(G, steps=5):\n    return G",
           "copying": "def later_vs_first(nll, text, known):\n    return 1.0, 2.0"},
}

# Answers that hand one task to existing code, on the chapter's solution: that task must score 0, the others
# keep their points. name: (chapter, task, the answer's cell)
DELEGATIONS = {
    "distribution_log_prob": ("01", "sequence_log_prob", (
        "def text_log_prob(text, token_probs):\n    toks = sorted(token_probs)\n"
        "    probs = torch.tensor([token_probs[t] for t in toks], dtype=torch.float64)\n"
        "    dist = torch.distributions.Categorical(probs=probs)\n"
        "    lp = {t: float(dist.log_prob(torch.tensor(i))) for i, t in enumerate(toks)}\n"
        "    best = [0.0] + [-math.inf] * len(text)\n"
        "    for i in range(1, len(text) + 1):\n"
        "        terms = [best[i - len(t)] + lp[t] for t in toks if len(t) <= i and text[i - len(t):i] == t]\n"
        "        terms = [x for x in terms if x > -math.inf]\n"
        "        if terms:\n            m = max(terms)\n"
        "            best[i] = m + math.log(sum(math.exp(x - m) for x in terms))\n"
        "    return best[-1]")),
    "private_alias_of_cross_entropy": ("01", "perplexity", (
        "def perplexity_from_logits(logits, targets, lengths):\n    V = logits.shape[-1]\n"
        "    return math.exp(torch._C._nn.cross_entropy_loss(logits.reshape(-1, V), targets.reshape(-1),\n"
        "                                                    None, 1, -1).item())")),
    "subclass_of_the_package_tokenizer": ("01", "char_tokenizer", (
        "from lmcourse.tokenization import CharTokenizer\n\n\nclass MyCharTokenizer(CharTokenizer):\n"
        "    def __init__(self, text, special_tokens=()):\n"
        "        super().__init__(text, special_tokens=special_tokens)")),
    "private_gru_kernel": ("03", "gru", (
        "def my_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):\n"
        "    return torch._VF.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)")),
    "package_attention_named_nowhere": ("04", "mha", (
        "from lmcourse.costs import tiled_attention\n\n\n"
        "def causal_mha(x, w_qkv, b_qkv, w_out, b_out, n_heads):\n    B, T, D = x.shape\n"
        "    q, k, v = (x @ w_qkv.T + b_qkv).split(D, dim=-1)\n"
        "    heads = lambda z: z.view(B, T, n_heads, D // n_heads).transpose(1, 2)\n"
        "    y = tiled_attention(heads(q), heads(k), heads(v), block=2, causal=True)\n"
        "    return y.transpose(1, 2).reshape(B, T, D) @ w_out.T + b_out")),
    "hugging_face_schedule": ("07", "wsd", (
        "from transformers import get_wsd_schedule\n\n\n"
        "def wsd_lr(step, steps, warmup, decay, lr, min_lr=0.0):\n"
        "    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)\n"
        "    schedule = get_wsd_schedule(opt, warmup, decay, num_training_steps=steps, decay_type='linear',\n"
        "                                min_lr_ratio=min_lr / lr)\n"
        "    for _ in range(step + 1):\n        schedule.step()\n    return opt.param_groups[0]['lr']")),
    "hugging_face_label_smoother": ("10", "smoothed_loss", (
        "from transformers.trainer_pt_utils import LabelSmoother\n\n\n"
        "def smoothed_mlm_loss(logits, labels, eps):\n"
        "    return LabelSmoother(epsilon=eps)({'logits': logits}, labels)")),
}

# honest answers that must keep every point: name -> (chapter, edits on the solution)
HONEST = {
    "own_helper_named_like_a_checks_import": ("05", [(ANSWER, "port", (
        "def rope_half_permutation(d_head):  # the name of the package function the task forbids\n"
        "    return [*range(0, d_head, 2), *range(1, d_head, 2)]\n\n\n"
        "def apply_rope_half(rows):  # and of another package function, here a helper of the answer\n"
        "    return rows\n\n\n"
        "def to_half_split(w, n_heads, rot):\n    d_head = w.shape[0] // n_heads\n"
        "    order = rope_half_permutation(rot) + list(range(rot, d_head))\n"
        "    return apply_rope_half(w[[h * d_head + j for h in range(n_heads) for j in order]])"))]),
    "helpers_with_names_checks_use": ("11", [(ADD, "want = 0\nexpected = 1\nref = None\nx = 3")]),
}


def _notebook(chapter: str, base_dir: Path, edits) -> nbformat.NotebookNode:
    nb = nbformat.read(next(base_dir.glob(f"{chapter}_*.ipynb")), as_version=4)
    nb = copy.deepcopy(nb)
    if base_dir == EXERCISES_DIR:
        edits = [(ANSWER, task, source) for task, source in DUMMY[chapter].items()] + list(edits)
    for edit in edits:
        if edit[0] == ADD:
            setup = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
            nb.cells.insert(setup + 1, nbformat.v4.new_code_cell(edit[1]))
        else:
            _, task, source = edit
            cell = next(c for c in nb.cells
                        if cell_info(c).get("role") == "solution" and cell_info(c).get("task") == task)
            cell.source = source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    items = []
    for name, (chapter, edits) in HOSTILE.items():
        path = root / name / f"{chapter}_hostile.ipynb"
        path.parent.mkdir()
        nbformat.write(_notebook(chapter, EXERCISES_DIR, edits), path)
        items.append((path, name))
    for name, (chapter, task, source) in DELEGATIONS.items():
        path = root / name / f"{chapter}_delegates.ipynb"
        path.parent.mkdir()
        nbformat.write(_notebook(chapter, SOLUTIONS_DIR, [(ANSWER, task, source)]), path)
        items.append((path, name))
    for name, (chapter, edits) in HONEST.items():
        path = root / name / f"{chapter}_honest.ipynb"
        path.parent.mkdir()
        nbformat.write(_notebook(chapter, SOLUTIONS_DIR, edits), path)
        items.append((path, name))
    with CheckPool() as checks:
        rows = grade_notebooks(items, jobs=2, warm=_pool(), checks=checks, timeout=120)
    return {name: {r.task: r for r in task_rows} for (_, name), task_rows in zip(items, rows, strict=True)}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_route_scores_zero(graded, name):
    rows = graded[name]
    assert rows and all(r.points == 0 for r in rows.values()), {t: (r.points, r.status, r.message)
                                                                for t, r in rows.items()}


@pytest.mark.parametrize("name", sorted(DELEGATIONS))
def test_a_delegated_answer_scores_zero_and_costs_nothing_else(graded, name):
    task = DELEGATIONS[name][1]
    rows = graded[name]
    assert rows[task].points == 0, (rows[task].status, rows[task].message)
    assert all(r.points == r.max_points for t, r in rows.items() if t != task), {
        t: (r.points, r.message) for t, r in rows.items()}


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_answers_keep_their_points(graded, name):
    rows = graded[name]
    assert all(r.points == r.max_points for r in rows.values()), {t: (r.points, r.status, r.message)
                                                                  for t, r in rows.items()}


def test_a_refused_answer_says_what_and_where(graded):
    message = graded["setup_alias_of_the_forbidden_function"]["rms_norm"].message
    assert message.startswith("not run: code cell ") and "torch.nn.functional.rms_norm" in message, message


def test_a_forbidden_kernel_reached_by_a_method_is_named(graded):
    # read clean (no forbidden name), caught as it runs: the kernel is recorded whatever route reached it
    message = graded["library_sibling_runs_the_forbidden_kernel"]["gumbel"].message
    assert "must not run aten::multinomial" in message, message
