// What every view of a cluster's page gets, and what it must do.

import type { Api, Config, LiveEvent } from "./api";

export interface Context {
  api: Api;
  cfg: Config;
  id: string;                                  // the cluster's id
  go: (hash: string) => void;                  // navigate within the page
  query: URLSearchParams;                      // the route's query (#/tasks?state=FAILED)
  arg: string | null;                          // the route's argument (#/tasks/<id>)
  failed: (e: unknown) => void;                // report an API failure (gone, 403...)
}

export interface View {
  el: HTMLElement;
  refresh(): Promise<void>;                    // reload everything (first show, resync)
  onEvents?(evs: LiveEvent[]): void;           // live events while shown
  tick?(): void;                               // called every second while shown
  destroy?(): void;
}
