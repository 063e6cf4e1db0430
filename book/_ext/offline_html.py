"""Keep the HTML book offline: drop the scripts that point at other hosts.

Jupyter Book 1 always loads sphinx-thebe, which writes the address of thebe on a
CDN into every page (used only by a "live code" button this book does not enable).
This extension removes that script and its loader from each page, so the built
book refers to no host but itself. MathJax is vendored (see `_config.yml`).
"""


def _is_thebe(js) -> bool:
    filename = getattr(js, "filename", None) or ""
    body = (getattr(js, "attributes", None) or {}).get("body", "") or ""
    return "thebe" in str(filename) or "THEBE_JS_URL" in body


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [js for js in scripts if not _is_thebe(js)]
    styles = context.get("css_files")
    if styles:
        context["css_files"] = [css for css in styles if "thebe" not in str(getattr(css, "filename", css))]


def _drop_thebe_config(app, doctree, docname):
    from docutils import nodes

    for node in list(doctree.findall(nodes.raw)):
        if "thebe" in node.astext() or "kernelName" in node.astext():
            node.parent.remove(node)


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    app.connect("doctree-resolved", _drop_thebe_config, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
