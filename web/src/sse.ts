// A small incremental parser of the text/event-stream format (WHATWG HTML, "Server-sent events"):
// lines "event:", "data:" (several are joined with "\n"), "id:", comments starting with ":",
// an empty line dispatches the event. Chunks may split lines anywhere.

export interface SSEEvent {
  event: string;
  data: string;
  id: string;
}

export function parseSSE(dispatch: (ev: SSEEvent) => void): { push: (chunk: string) => void } {
  let buffer = "";
  let event = "";
  let data: string[] = [];
  let id = "";
  let first = true;

  function line(l: string): void {
    if (l === "") {
      if (data.length) dispatch({ event: event || "message", data: data.join("\n"), id });
      event = "";
      data = [];
      return;
    }
    if (l.startsWith(":")) return;
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }

  return {
    push(chunk: string) {
      if (first) {
        if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
        first = false;
      }
      buffer += chunk;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buffer);
        if (!m) break;
        // A lone "\r" at the very end might be the first half of "\r\n": wait for more.
        if (m[0] === "\r" && m.index === buffer.length - 1) break;
        line(buffer.slice(0, m.index));
        buffer = buffer.slice(m.index + m[0].length);
      }
    },
  };
}
