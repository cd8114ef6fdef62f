"""`poemctl serve`: a Gradio page to write poems with a checkpoint (the optional extra poemctl[web]).

Each request writes with its own seed and random stream (sampling.write_poems makes one per call), so users
served at once never share one; Gradio's queue takes the requests in turn.
"""

from __future__ import annotations

import html
import random

from poemctl import hub
from poemctl.api import Poet
from poemctl.config import STRATEGIES, SampleConfig
from poemctl.control import RHYME_NAMES
from poemctl.errors import PoemctlError
from poemctl.prosody import PING, ZE, Prosody
from poemctl.sampling import format_poem, write_poems

TONE_MARKS = {frozenset({PING}): "○", frozenset({ZE}): "●", frozenset({PING, ZE}): "◐", frozenset(): "·"}


def annotate(poem: list[str], prosody: Prosody) -> str:
    """A poem as HTML: each line with its tones under it (○ level, ● oblique, ◐ either, · unknown) and the
    level-tone rhyme groups of its last character."""
    rows = []
    for k, line in enumerate(poem):
        end = "，" if k % 2 == 0 and k < len(poem) - 1 else "。"
        tones = "".join(TONE_MARKS[prosody.tones(ch)] for ch in line)
        groups = ("、".join(sorted(g[3:] for g in prosody.ping_groups(line[-1]))) or "仄") if line else ""
        rows.append(
            f'<div class="line"><span class="text">{html.escape(line + end)}</span> '
            f'<span class="tones">{tones}</span> <span class="rhyme">{html.escape(groups)}</span></div>'
        )
    return '<div class="poem">' + "".join(rows) + "</div>"


def write(poet: Poet, prosody: Prosody, first, lines, chars, acrostic, rhyme, group, tones, strategy, temperature,
          seed, num) -> str:  # fmt: skip
    """The page's answer: the poems as annotated HTML, or one line saying what is wrong with the input."""
    try:
        seed = int(seed) if seed not in (None, "") else random.randrange(2**31)
        cfg = SampleConfig(
            lines=int(lines),
            chars=int(chars),
            num=int(num),
            seed=seed,
            strategy=strategy,
            temperature=float(temperature) if strategy == "sample" else 1.0,
            acrostic=(acrostic or "").strip(),
            rhyme=bool(rhyme),
            tones=bool(tones),
            rhyme_group=group or "",
        )
        poems = write_poems(poet.model, poet.meta.vocab, (first or "").strip() or "月", cfg,
                            data=poet.meta.config.data, prosody=prosody)  # fmt: skip
    except PoemctlError as e:
        return f'<p class="error">error: {html.escape(str(e))}</p>'
    except (TypeError, ValueError) as e:
        return f'<p class="error">error: {html.escape(str(e).splitlines()[0] if str(e) else type(e).__name__)}</p>'
    body = "".join(annotate(p, prosody) for p in poems)
    text = html.escape("\n\n".join(format_poem(p) for p in poems))
    return f'<p class="seed">seed {seed}</p>{body}<pre class="plain" hidden>{text}</pre>'


CSS = """
.poem { margin: 0.8em 0; font-size: 1.4em; }
.line .tones { color: #777; font-size: 0.6em; letter-spacing: 0.55em; margin-left: 1em; }
.line .rhyme { color: #a33; font-size: 0.6em; }
.error { color: #b00; font-weight: bold; }
"""


def app(poet: Poet):
    """The Gradio Blocks page for poet."""
    import gradio as gr

    prosody = Prosody()
    with gr.Blocks(title="poemctl") as page:
        gr.Markdown(
            "# poemctl: 写一首唐诗\nAn LSTM trained on the Complete Tang Poems writes; ○ level tone, ● oblique."
        )
        with gr.Row():
            with gr.Column(scale=1):
                first = gr.Textbox(value="月", label="beginning (one character or more)", elem_id="first")
                lines = gr.Slider(1, 8, value=4, step=1, label="lines")
                chars = gr.Radio([5, 7], value=7, label="characters per line")
                acrostic = gr.Textbox(value="", label="acrostic (藏头诗), e.g. 春夏秋冬", elem_id="acrostic")
                with gr.Row():
                    rhyme = gr.Checkbox(value=False, label="rhyme")
                    tones = gr.Checkbox(value=False, label="tones (平仄)")
                group = gr.Dropdown(["", *RHYME_NAMES], value="", label="rhyme group (平水韵)")
                strategy = gr.Dropdown(list(STRATEGIES), value="course", label="strategy")
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="temperature (sample)")
                seed = gr.Textbox(value="", label="seed (empty: random)", elem_id="seed")
                num = gr.Slider(1, 10, value=1, step=1, label="how many")
                button = gr.Button("写 write", variant="primary", elem_id="write")
            with gr.Column(scale=1):
                poems = gr.HTML(elem_id="poems")
        with gr.Accordion("model card", open=False):
            gr.Markdown(hub.model_card(poet.meta) + f"\n\nCheckpoint: `{poet.path}`")
        inputs = [first, lines, chars, acrostic, rhyme, group, tones, strategy, temperature, seed, num]
        button.click(lambda *a: write(poet, prosody, *a), inputs, poems)
    return page.queue(default_concurrency_limit=2), CSS


def serve(ckpt: str | None, runs: str, host: str, port: int) -> None:
    """Load the checkpoint and serve the page until interrupted."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise PoemctlError("poemctl serve needs gradio: pip install 'poemctl[web]'") from None
    from poemctl.api import load

    page, css = app(load(ckpt, runs=runs))
    page.launch(server_name=host, server_port=port, css=css, show_error=False, quiet=True)
