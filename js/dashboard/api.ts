// Talking to the server that served the page: JSON requests under its base URL, and the
// live event socket, which reconnects by itself.

export interface Config {
  baseUrl: string;           // "/" on the head, Jupyter's base_url under the extension
  server: "jupyter" | "head";
  clusterId: string | null;  // the cluster page's cluster, null on the list page
  labUrl?: string;           // "{base}lab/tree/" under Jupyter
}

export function config(): Config {
  const el = document.getElementById("nbcluster-config");
  return JSON.parse(el?.textContent || "{}") as Config;
}

export class ApiError extends Error {
  constructor(public status: number, message: string, public body: any) {
    super(message);
  }
}

function xsrf(): string {
  const m = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

export class Api {
  constructor(public cfg: Config) {}

  url(path: string): string {
    return `${this.cfg.baseUrl}nbcluster/${path}`;
  }

  cluster(id: string, what = "", params: Record<string, any> = {}): string {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      if (Array.isArray(v)) v.forEach((x) => q.append(k, String(x)));
      else q.append(k, String(v));
    }
    const qs = q.toString();
    return this.url(`api/clusters/${id}${what ? "/" + what : ""}${qs ? "?" + qs : ""}`);
  }

  // Reads send the XSRF token too: JupyterHub (a user's server, or a Hub service) accepts
  // its login cookie on a script's fetch, even a GET, only with it.
  async get(url: string): Promise<any> {
    const r = await fetch(url, {
      credentials: "same-origin", headers: { "X-XSRFToken": xsrf(), Accept: "application/json" },
    });
    return this.answer(r);
  }

  async post(url: string): Promise<any> {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-XSRFToken": xsrf(), Accept: "application/json" },
    });
    return this.answer(r);
  }

  private async answer(r: Response): Promise<any> {
    let body: any = null;
    try { body = await r.json(); } catch { /* not JSON */ }
    if (!r.ok) throw new ApiError(r.status, body?.message || r.statusText, body);
    return body;
  }

  socketUrl(id: string, params: Record<string, string>): string {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams(params).toString();
    return `${proto}//${location.host}${this.url(`api/clusters/${id}/events`)}${q ? "?" + q : ""}`;
  }
}

export interface LiveEvent {
  seq: number;
  time: number | null;
  type: string;
  data: Record<string, any>;
  source: Record<string, any>;
}

export type FeedState = "connecting" | "live" | "closed";

// The cluster's event stream. `onEvents` gets each batch; `onResync` is called when the
// page should reload what it shows (first connection, a gap, a reconnection).
export class Feed {
  private ws: WebSocket | null = null;
  private retry = 500;
  private stopped = false;
  state: FeedState = "connecting";

  constructor(
    private url: string,
    private onEvents: (evs: LiveEvent[]) => void,
    private onResync: () => void,
    private onState: (s: FeedState, why?: string) => void,
  ) {
    this.open();
  }

  private open(): void {
    this.set("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (Array.isArray(msg)) {
        if (msg.some((e: LiveEvent) => e.type === "EVENTS_LOST")) this.onResync();
        this.onEvents(msg);
      } else if (msg.subscribed) {
        this.retry = 500;
        this.set("live");
        this.onResync();
      } else if (msg.error) {
        this.set("closed", msg.error);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.set("closed");
      if (!this.stopped) {
        window.setTimeout(() => !this.stopped && this.open(), this.retry);
        this.retry = Math.min(this.retry * 2, 10_000);
      }
    };
  }

  private set(s: FeedState, why?: string): void {
    this.state = s;
    this.onState(s, why);
  }

  close(): void {
    this.stopped = true;
    this.ws?.close();
  }
}
