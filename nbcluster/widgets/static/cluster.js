function m(t,s,o){let n=structuredClone(t.get("snapshot")||{seq:0}),a=0,i=()=>{let e=t.get("snapshot");e&&e.seq>=n.seq&&(n=structuredClone(e),o(n,!0))},c=(e,p)=>{!e||e.kind!=="delta"||(e.base===n.seq?(s(n,e,p||[]),n.seq=e.seq,o(n,!1)):e.seq>n.seq&&Date.now()-a>1e3&&(a=Date.now(),t.send({kind:"resync"})))};return t.on("change:snapshot",i),t.on("msg:custom",c),o(n,!0),g(t,!0),()=>{t.off("change:snapshot",i),t.off("msg:custom",c),g(t,!1)}}function g(t,s){try{t.send({kind:"view",on:s})}catch{}}function f(t,s){if(document.getElementById(t))return;let o=document.createElement("style");o.id=t,o.textContent=s,document.head.appendChild(o)}var h=`
.nbc-widget { font-family: var(--jp-ui-font-family, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, #222);
  padding: 4px 0; }
.nbc-title { font-weight: 600; margin-bottom: 4px; }
.nbc-muted { color: var(--jp-ui-font-color2, #666); }
.nbc-widget table { border-collapse: collapse; }
.nbc-widget th { text-align: left; font-weight: 600; padding: 2px 8px;
  border-bottom: 1px solid var(--jp-border-color2, #ddd); }
.nbc-widget td { padding: 2px 8px; }
.nbc-bar { display: flex; height: 10px; border-radius: 3px; overflow: hidden;
  background: var(--jp-layout-color2, #eee); }
.nbc-button { font: inherit; color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color2, #eee); border: 1px solid var(--jp-border-color1, #bbb);
  border-radius: 3px; padding: 1px 10px; cursor: pointer; }
.nbc-button:disabled { opacity: 0.5; cursor: default; }
.nbc-error { color: var(--jp-error-color1, #d32f2f); white-space: pre-wrap; }
`;function r(t,s={},...o){let n=document.createElement(t);for(let[a,i]of Object.entries(s))i!=null&&(a==="class"?n.className=String(i):a==="style"?n.setAttribute("style",String(i)):a.startsWith("on")?n[a]=i:n.setAttribute(a,String(i)));for(let a of o)n.append(a);return n}function d(t){if(t==null)return"?";let s=["B","KB","MB","GB","TB"],o=0;for(;Math.abs(t)>=1e3&&o<s.length-1;)t/=1e3,o++;return o===0?`${t.toFixed(0)} B`:`${t.toFixed(1)} ${s[o]}`}var y=`
.nbc-cluster td { vertical-align: middle; }
.nbc-cluster .nbc-meter { display: flex; align-items: center; gap: 6px; }
.nbc-cluster .nbc-fill { height: 10px; background: var(--jp-brand-color1, #1976d2); }
.nbc-cluster .nbc-spark { stroke: var(--jp-brand-color1, #1976d2); fill: none; stroke-width: 1.2; }
.nbc-cluster .nbc-dead { color: var(--jp-error-color1, #d32f2f); }
`;function l(t,s,o=""){let n=Math.max(0,Math.min(1,t||0)),a=r("div",{class:"nbc-bar",style:"width:120px"},r("div",{class:"nbc-fill",style:`width:${(n*100).toFixed(1)}%`}));return r("div",{class:`nbc-meter ${o}`,"data-fraction":n.toFixed(3)},a,r("span",{},s))}function w(t,s=1){let o="http://www.w3.org/2000/svg",n=document.createElementNS(o,"svg");n.setAttribute("width","120"),n.setAttribute("height","20");let a=document.createElementNS(o,"polyline"),i=Math.max(1,t.length-1);return a.setAttribute("points",t.map((c,e)=>`${(e/i*118+1).toFixed(1)},${(19-Math.min(c,s)/s*18).toFixed(1)}`).join(" ")),a.setAttribute("class","nbc-spark"),n.append(a),n}function S(t,s){let o=s.nodes||[],a=r("table",{},r("thead",{},r("tr",{},...["node","CPU","CPU (last minutes)","GPU","memory","object store","workers","pending"].map(e=>r("th",{},e))))),i=r("tbody");for(let e of o){let p=e.history||[],b=e.cpus-e.cpus_free,v=Object.entries(e.demand||{}).map(([u,x])=>`${u} ×${x}`).join(", ");i.append(r("tr",{class:"nbc-node-row","data-node":e.node_id,"data-alive":String(e.alive)},r("td",{class:e.alive?"":"nbc-dead"},e.address+(e.alive?"":" (dead)")),r("td",{},l(e.cpus?b/e.cpus:0,`${b}/${e.cpus} · ${e.cpu.toFixed(0)}%`,"nbc-cpu")),r("td",{},w(p.map(u=>u[0]),100)),r("td",{},e.gpus?l((e.gpus-e.gpus_free)/e.gpus,`${e.gpus-e.gpus_free}/${e.gpus}`):"–"),r("td",{},l(e.mem_total?e.mem_used/e.mem_total:0,`${d(e.mem_used)} / ${d(e.mem_total)}`,"nbc-mem")),r("td",{},l(e.store_capacity?e.store_used/e.store_capacity:0,`${d(e.store_used)} / ${d(e.store_capacity)}`,"nbc-store")),r("td",{class:"nbc-workers"},String(e.workers)),r("td",{},v||"–")))}a.append(i);let c=o.filter(e=>e.alive).length;t.replaceChildren(r("div",{class:"nbc-title"},`Cluster: ${c} node${c===1?"":"s"} alive`),a),t.dataset.nodes=String(c)}function $({model:t,el:s}){f("nbc-base-css",h),f("nbc-cluster-css",y);let o=r("div",{class:"nbc-widget nbc-cluster"});return s.append(o),m(t,()=>{},n=>S(o,n))}var E={render:$};export{E as default,l as meter};
