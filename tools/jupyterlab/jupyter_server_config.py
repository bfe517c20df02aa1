# Loaded by `./course lab` (JUPYTER_CONFIG_PATH=tools/jupyterlab): before a notebook is saved, drop the outputs of
# widgets that were closed in the kernel (tqdm's finished bars, for example). Their models are not in the widget
# state JupyterLab saves, so a reopened notebook would show "Error displaying widget: model not found" for each;
# a closed widget shows nothing in the live notebook either.
VIEW, STATE = "application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json"


def drop_closed_widget_views(model=None, **kwargs):
    "pre_save_hook: remove widget views whose model is not in the notebook's saved widget state."
    if not model or model.get("type") != "notebook" or not isinstance(model.get("content"), dict): return
    nb = model["content"]
    saved = nb.get("metadata", {}).get("widgets", {}).get(STATE, {}).get("state", {})
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and cell.get("outputs"):
            cell["outputs"] = [o for o in cell["outputs"]
                               if VIEW not in o.get("data", {}) or o["data"][VIEW].get("model_id") in saved]


c.ContentsManager.pre_save_hook = drop_closed_widget_views  # noqa: F821 (c is the config object)
