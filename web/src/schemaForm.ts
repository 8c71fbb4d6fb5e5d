// Builds a parameters form from an operation's JSON Schema (draft 2020-12, as the processor's
// catalogue gives it). Understood: number/integer (minimum/maximum/exclusive*/multipleOf/default),
// boolean, string, enum (-> select), nullable types (type: [X, "null"] or anyOf with null),
// $ref into $defs, arrays of numbers (fixed length -> one input per item, else comma-separated),
// and presets: the schema's top-level `examples` (objects of params) fill the form at once.
// Field order: the schema's top-level `x-order` array when it has one, else the key order.

import { h, nextId } from "./util";

type Schema = Record<string, unknown> & {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  title?: string;
  description?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  items?: Schema;
  minItems?: number;
  maxItems?: number;
  anyOf?: Schema[];
  oneOf?: Schema[];
  $ref?: string;
  examples?: unknown[];
};

interface Field {
  name: string;
  el: HTMLElement;
  /** The control to mark invalid and focus when read() throws. */
  control?: HTMLElement;
  errorEl?: HTMLElement;
  /** The value to send, or undefined to leave it to the server's default. Throws on bad input. */
  read(): unknown;
  write(v: unknown): void;
}

export interface ParamsForm {
  el: HTMLElement;
  /** Current params; throws Error with a readable message when a field is invalid. */
  values(): Record<string, unknown>;
}

function resolve(s: Schema, root: Schema): Schema {
  let cur = s;
  for (let i = 0; i < 10 && cur.$ref; i++) {
    const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(cur.$ref);
    const defs = m ? (root[m[1]] as Record<string, Schema> | undefined) : undefined;
    const target = m && defs ? defs[decodeURIComponent(m[2])] : undefined;
    if (!target) break;
    const { $ref: _ignored, ...rest } = cur;
    cur = { ...target, ...rest };
  }
  return cur;
}

/** Reduces a property schema to {base type, nullable, schema} after $ref/anyOf handling. */
function normalise(raw: Schema, root: Schema): { type: string; nullable: boolean; s: Schema } {
  let s = resolve(raw, root);
  let nullable = false;
  const alts = s.anyOf ?? s.oneOf;
  if (alts) {
    const nonNull = alts.map((a) => resolve(a, root)).filter((a) => a.type !== "null");
    nullable = nonNull.length < alts.length;
    if (nonNull.length === 1) s = { ...nonNull[0], ...stripAlts(s) };
    else if (nonNull.every((a) => "const" in a)) s = { ...stripAlts(s), enum: nonNull.map((a) => a.const) };
  }
  let type = s.type;
  if (Array.isArray(type)) {
    nullable = nullable || type.includes("null");
    type = type.find((t) => t !== "null") ?? "string";
  }
  if (s.enum) {
    nullable = nullable || s.enum.includes(null);
    return { type: "enum", nullable, s };
  }
  if ("const" in s) return { type: "enum", nullable, s: { ...s, enum: [s.const] } };
  return { type: type ?? "string", nullable, s };
}

function stripAlts(s: Schema): Schema {
  const { anyOf: _a, oneOf: _o, ...rest } = s;
  return rest;
}

function labelText(name: string, s: Schema): string {
  return s.title ?? name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function rangeHint(s: Schema): string {
  const parts: string[] = [];
  if (s.minimum !== undefined) parts.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) parts.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined) parts.push(`≤ ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) parts.push(`< ${s.exclusiveMaximum}`);
  return parts.join(", ");
}

function numberInput(id: string, s: Schema, integer: boolean, label: string): HTMLInputElement {
  const min = s.minimum ?? s.exclusiveMinimum;
  const max = s.maximum ?? s.exclusiveMaximum;
  return h("input", {
    id,
    type: "number",
    inputmode: integer ? "numeric" : "decimal",
    step: s.multipleOf ?? (integer ? 1 : "any"),
    min,
    max,
    "aria-label": label,
  });
}

function parseNumber(text: string, label: string, s: Schema, integer: boolean): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) throw new Error(`${label}: "${text}" is not a number`);
  if (integer && !Number.isInteger(n)) throw new Error(`${label} must be a whole number`);
  if (s.minimum !== undefined && n < s.minimum) throw new Error(`${label} must be at least ${s.minimum}`);
  if (s.maximum !== undefined && n > s.maximum) throw new Error(`${label} must be at most ${s.maximum}`);
  if (s.exclusiveMinimum !== undefined && n <= s.exclusiveMinimum)
    throw new Error(`${label} must be more than ${s.exclusiveMinimum}`);
  if (s.exclusiveMaximum !== undefined && n >= s.exclusiveMaximum)
    throw new Error(`${label} must be less than ${s.exclusiveMaximum}`);
  return n;
}

function makeField(name: string, raw: Schema, root: Schema, required: boolean): Field {
  const { type, nullable, s } = normalise(raw, root);
  const id = nextId(`param-${name}`);
  const label = labelText(name, s);
  const hintId = `${id}-hint`;
  const hintText = [s.description, type === "number" || type === "integer" ? rangeHint(s) : ""]
    .filter(Boolean)
    .join(" · ");
  const hint = hintText ? h("span", { class: "hint", id: hintId }, hintText) : null;
  const errorEl = h("span", { class: "field-error", id: `${id}-error`, hidden: true });
  const wrap = (control: HTMLElement, inline = false) =>
    h(
      "div",
      { class: inline ? "field field-inline" : "field", "data-param": name },
      inline ? control : h("label", { for: id }, label, required ? " *" : ""),
      inline ? h("label", { for: id }, label) : control,
      hint,
      errorEl,
    );

  if (type === "boolean") {
    const input = h("input", { id, type: "checkbox", "aria-describedby": hint ? hintId : null });
    const f: Field = {
      name,
      el: wrap(input, true),
      read: () => input.checked,
      write: (v) => (input.checked = v === true),
    };
    f.write(s.default);
    return f;
  }

  if (type === "enum") {
    const options = s.enum ?? [];
    const select = h("select", { id, "aria-describedby": hint ? hintId : null });
    const values: unknown[] = [];
    if (!options.includes(null) && (nullable || (!required && s.default === undefined))) {
      select.append(h("option", { value: "" }, "(default)"));
      values.push(undefined);
    }
    for (const o of options) {
      select.append(h("option", { value: String(values.length) }, o === null ? "(none)" : String(o)));
      values.push(o);
    }
    // The "(default)" entry has value "", the others their index in `values`.
    const f: Field = {
      name,
      el: wrap(select),
      read: () => (select.value === "" ? undefined : values[Number(select.value)]),
      write: (v) => {
        const i = values.findIndex((x) => x === v);
        select.value = i < 0 ? (values[0] === undefined ? "" : "0") : values[i] === undefined ? "" : String(i);
      },
    };
    f.write(s.default);
    return f;
  }

  if (type === "number" || type === "integer") {
    const integer = type === "integer";
    const input = numberInput(id, s, integer, label);
    if (hint) input.setAttribute("aria-describedby", hintId);
    if (nullable) input.placeholder = "(none)";
    input.removeAttribute("aria-label");
    const f: Field = {
      name,
      el: wrap(input),
      control: input,
      errorEl,
      read: () => {
        // A value the browser cannot parse ("1e400", "1,5") reads as "": not a silent default.
        if (input.validity.badInput) throw new Error(`${label}: the value is not a valid number`);
        if (input.value.trim() === "") {
          if (required && !nullable) throw new Error(`${label} is required`);
          return nullable && s.default === null ? null : undefined;
        }
        return parseNumber(input.value, label, s, integer);
      },
      write: (v) => (input.value = typeof v === "number" ? String(v) : ""),
    };
    f.write(s.default);
    return f;
  }

  if (type === "array") {
    const items = resolve(s.items ?? {}, root);
    const itemType = normalise(items, root).type;
    const integer = itemType === "integer";
    const numeric = itemType === "number" || integer;
    const fixed = s.minItems !== undefined && s.minItems === s.maxItems && s.minItems <= 4 ? s.minItems : 0;
    if (numeric && fixed) {
      const inputs = Array.from({ length: fixed }, (_, i) =>
        numberInput(i === 0 ? id : `${id}-${i}`, items, integer, `${label} ${["x", "y", "z", "t"][i] ?? i + 1}`),
      );
      const group = h("div", { class: "array-inputs", role: "group", "aria-label": label }, ...inputs);
      if (hint) inputs.forEach((inp) => inp.setAttribute("aria-describedby", hintId));
      const f: Field = {
        name,
        el: wrap(group),
        control: inputs[0],
        errorEl,
        read: () => {
          const bad = inputs.findIndex((i) => i.validity.badInput);
          if (bad >= 0) {
            f.control = inputs[bad];
            throw new Error(`${label} ${bad + 1}: the value is not a valid number`);
          }
          f.control = inputs[0];
          const texts = inputs.map((i) => i.value.trim());
          if (texts.every((t) => t === "")) {
            if (required) throw new Error(`${label} is required`);
            return nullable && s.default === null ? null : undefined;
          }
          return texts.map((t, i) => parseNumber(t, `${label} ${i + 1}`, items, integer));
        },
        write: (v) => inputs.forEach((inp, i) => (inp.value = Array.isArray(v) && v[i] !== undefined ? String(v[i]) : "")),
      };
      f.write(s.default);
      return f;
    }
    const input = h("input", {
      id,
      type: "text",
      placeholder: numeric ? "e.g. 1, 1, 1" : "comma-separated",
      "aria-describedby": hint ? hintId : null,
    });
    const f: Field = {
      name,
      el: wrap(input),
      read: () => {
        const text = input.value.trim();
        if (text === "") {
          if (required) throw new Error(`${label} is required`);
          return nullable && s.default === null ? null : undefined;
        }
        const parts = text.split(/[,\s]+/).filter(Boolean);
        if (s.minItems !== undefined && parts.length < s.minItems) throw new Error(`${label} needs at least ${s.minItems} values`);
        if (s.maxItems !== undefined && parts.length > s.maxItems) throw new Error(`${label} takes at most ${s.maxItems} values`);
        return numeric ? parts.map((p, i) => parseNumber(p, `${label} ${i + 1}`, items, integer)) : parts;
      },
      write: (v) => (input.value = Array.isArray(v) ? v.join(", ") : ""),
    };
    f.write(s.default);
    return f;
  }

  // string (or anything else: edited as text, sent as JSON when it parses as an object)
  const input = h("input", { id, type: "text", "aria-describedby": hint ? hintId : null });
  const f: Field = {
    name,
    el: wrap(input),
    read: () => {
      const t = input.value;
      if (t === "") {
        if (required) throw new Error(`${label} is required`);
        return nullable && s.default === null ? null : undefined;
      }
      if (type === "object") {
        try {
          return JSON.parse(t);
        } catch {
          throw new Error(`${label} must be JSON`);
        }
      }
      return t;
    },
    write: (v) => (input.value = v === undefined || v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v)),
  };
  f.write(s.default);
  return f;
}

function presetName(p: Record<string, unknown>): string {
  if (typeof p["x-title"] === "string") return p["x-title"];
  if (typeof p["preset"] === "string") return p["preset"];
  return Object.entries(p)
    .filter(([k]) => !k.startsWith("x-"))
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join("×") : String(v)}`)
    .join(", ");
}

/**
 * The property names in display order. Object keys come back sorted from the gateway (protobuf
 * Struct), so a top-level `x-order` array, when present, decides: its names first (unknown ones
 * skipped), then any property it leaves out, in key order.
 */
export function orderedNames(schema: Record<string, unknown>): string[] {
  const props = (schema as Schema).properties ?? {};
  const keys = Object.keys(props);
  const order = schema["x-order"];
  if (!Array.isArray(order)) return keys;
  const listed = order.filter((n, i): n is string => typeof n === "string" && n in props && order.indexOf(n) === i);
  return [...listed, ...keys.filter((k) => !listed.includes(k))];
}

export function buildParamsForm(schema: Record<string, unknown>): ParamsForm {
  const root = schema as Schema;
  const props = root.properties ?? {};
  const required = new Set(root.required ?? []);
  const fields = orderedNames(root).map((name) => makeField(name, props[name], root, required.has(name)));
  const el = h("div", { class: "params" });

  const presets = (Array.isArray(root.examples) ? root.examples : []).filter(
    (p): p is Record<string, unknown> => !!p && typeof p === "object" && !Array.isArray(p),
  );
  if (presets.length) {
    const id = nextId("preset");
    const select = h("select", { id }, h("option", { value: "" }, "(choose a preset)"));
    presets.forEach((p, i) => select.append(h("option", { value: String(i) }, presetName(p))));
    select.addEventListener("change", () => {
      const p = presets[Number(select.value)];
      if (!p) return;
      for (const f of fields) if (f.name in p) f.write(p[f.name]);
    });
    el.append(h("div", { class: "field" }, h("label", { for: id }, "Preset"), select));
  }
  if (!fields.length) el.append(h("p", { class: "muted" }, "This operation has no parameters."));
  for (const f of fields) el.append(f.el);

  const clearError = (f: Field) => {
    if (!f.errorEl || f.errorEl.hidden) return;
    f.errorEl.hidden = true;
    f.errorEl.textContent = "";
    for (const c of f.el.querySelectorAll("[aria-invalid]")) {
      c.removeAttribute("aria-invalid");
      const ids = (c.getAttribute("aria-describedby") ?? "").split(" ").filter((x) => x && x !== f.errorEl!.id);
      if (ids.length) c.setAttribute("aria-describedby", ids.join(" "));
      else c.removeAttribute("aria-describedby");
    }
  };
  for (const f of fields) {
    f.errorEl ??= f.el.querySelector<HTMLElement>(".field-error") ?? undefined;
    f.control ??= f.el.querySelector<HTMLElement>("input, select") ?? undefined;
    f.el.addEventListener("input", () => clearError(f));
  }

  return {
    el,
    values() {
      const out: Record<string, unknown> = {};
      for (const f of fields) clearError(f);
      for (const f of fields) {
        let v: unknown;
        try {
          v = f.read();
        } catch (e) {
          // Mark the field, say why next to it, and put the cursor there.
          const msg = (e as Error).message;
          if (f.errorEl) {
            f.errorEl.textContent = msg;
            f.errorEl.hidden = false;
          }
          if (f.control) {
            f.control.setAttribute("aria-invalid", "true");
            const ids = (f.control.getAttribute("aria-describedby") ?? "").split(" ").filter(Boolean);
            if (f.errorEl && !ids.includes(f.errorEl.id)) f.control.setAttribute("aria-describedby", [...ids, f.errorEl.id].join(" "));
            f.control.focus();
          }
          throw e;
        }
        if (v !== undefined) out[f.name] = v;
      }
      return out;
    },
  };
}
