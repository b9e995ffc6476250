// Try it, text to image: images generated from a prompt.

import { api } from "../../api.js";
import { errorBox, field, fill, h } from "../../dom.js";
import { ctrlEnter, num, running } from "./form.js";

export function imageView(pane, model, code, signal) {
  const prompt = h("textarea", {
    rows: "3",
    id: "image-prompt",
    value: "A lighthouse on a cliff at sunset, oil painting",
  });
  const sizes = h(
    "datalist",
    { id: "image-sizes" },
    ["256x256", "512x512", "768x768", "1024x1024"].map((s) => h("option", { value: s })),
  );
  const size = h("input", {
    name: "size",
    list: "image-sizes",
    placeholder: "the model's own",
    autocomplete: "off",
  });
  const n = num("1", { min: "1", max: "4", step: "1", name: "n" });
  const negative = h("input", { name: "negative_prompt", autocomplete: "off" });
  const extra = h("textarea", {
    name: "extra",
    rows: "2",
    spellcheck: "false",
    placeholder: '{"num_inference_steps": 20, "guidance_scale": 7.5, "seed": 42}',
  });
  const out = h("div", { class: "images", id: "image-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Generate");
  const form = h(
    "form",
    {},
    field("Prompt", prompt),
    h(
      "div",
      { class: "grid3" },
      field("Size", size, "WxH"),
      field("Images", n),
      field("Negative prompt", negative),
    ),
    sizes,
    field("Extra options (JSON object)", extra, "num_inference_steps, guidance_scale, seed…"),
    h("div", { class: "row" }, go),
    out,
  );
  ctrlEnter(form);
  pane.append(form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let options = {};
    try {
      options = extra.value.trim() ? JSON.parse(extra.value) : {};
      if (typeof options !== "object" || options === null || Array.isArray(options)) {
        throw new Error("must be a JSON object");
      }
    } catch (e) {
      fill(out, errorBox(new Error(`Extra options: ${e.message}`)));
      extra.focus();
      return;
    }
    const body = {
      model: model.id,
      prompt: prompt.value,
      n: Number(n.value) || 1,
      response_format: "b64_json",
    };
    if (size.value.trim()) body.size = size.value.trim();
    if (negative.value.trim()) body.negative_prompt = negative.value.trim();
    Object.assign(body, options);
    code.update("image", body);
    await running(go, out, async () => {
      fill(out, h("p", { class: "muted" }, "Generating…"));
      const res = await api("POST", "/v1/images/generations", body, { signal });
      fill(
        out,
        res.data.map((d, i) =>
          h("img", {
            alt: `Generated image ${i + 1}: ${prompt.value}`,
            src: d.b64_json ? `data:image/png;base64,${d.b64_json}` : d.url,
          }),
        ),
      );
    });
  });
}
