function g(t,a,r){let n=structuredClone(t.get("snapshot")||{seq:0}),s=0,i=()=>{let e=t.get("snapshot");e&&e.seq>=n.seq&&(n=structuredClone(e),r(n,!0))},c=(e,p)=>{!e||e.kind!=="delta"||(e.base===n.seq?(a(n,e,p||[]),n.seq=e.seq,r(n,!1)):e.seq>n.seq&&Date.now()-s>1e3&&(s=Date.now(),t.send({kind:"resync"})))};return t.on("change:snapshot",i),t.on("msg:custom",c),r(n,!0),()=>{t.off("change:snapshot",i),t.off("msg:custom",c)}}function f(t,a){if(document.getElementById(t))return;let r=document.createElement("style");r.id=t,r.textContent=a,document.head.appendChild(r)}var m=`
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
`;function o(t,a={},...r){let n=document.createElement(t);for(let[s,i]of Object.entries(a))i!=null&&(s==="class"?n.className=String(i):s==="style"?n.setAttribute("style",String(i)):s.startsWith("on")?n[s]=i:n.setAttribute(s,String(i)));for(let s of r)n.append(s);return n}function d(t){if(t==null)return"?";let a=["B","KB","MB","GB","TB"],r=0;for(;Math.abs(t)>=1e3&&r<a.length-1;)t/=1e3,r++;return r===0?`${t.toFixed(0)} B`:`${t.toFixed(1)} ${a[r]}`}var x=`
.nbc-cluster td { vertical-align: middle; }
.nbc-cluster .nbc-meter { display: flex; align-items: center; gap: 6px; }
.nbc-cluster .nbc-fill { height: 10px; background: var(--jp-brand-color1, #1976d2); }
.nbc-cluster .nbc-spark { stroke: var(--jp-brand-color1, #1976d2); fill: none; stroke-width: 1.2; }
.nbc-cluster .nbc-dead { color: var(--jp-error-color1, #d32f2f); }
`;function l(t,a,r=""){let n=Math.max(0,Math.min(1,t||0)),s=o("div",{class:"nbc-bar",style:"width:120px"},o("div",{class:"nbc-fill",style:`width:${(n*100).toFixed(1)}%`}));return o("div",{class:`nbc-meter ${r}`,"data-fraction":n.toFixed(3)},s,o("span",{},a))}function y(t,a=1){let r="http://www.w3.org/2000/svg",n=document.createElementNS(r,"svg");n.setAttribute("width","120"),n.setAttribute("height","20");let s=document.createElementNS(r,"polyline"),i=Math.max(1,t.length-1);return s.setAttribute("points",t.map((c,e)=>`${(e/i*118+1).toFixed(1)},${(19-Math.min(c,a)/a*18).toFixed(1)}`).join(" ")),s.setAttribute("class","nbc-spark"),n.append(s),n}function S(t,a){let r=a.nodes||[],s=o("table",{},o("thead",{},o("tr",{},...["node","CPU","CPU (last minutes)","GPU","memory","object store","workers","pending"].map(e=>o("th",{},e))))),i=o("tbody");for(let e of r){let p=e.history||[],b=e.cpus-e.cpus_free,h=Object.entries(e.demand||{}).map(([u,v])=>`${u} ×${v}`).join(", ");i.append(o("tr",{class:"nbc-node-row","data-node":e.node_id,"data-alive":String(e.alive)},o("td",{class:e.alive?"":"nbc-dead"},e.address+(e.alive?"":" (dead)")),o("td",{},l(e.cpus?b/e.cpus:0,`${b}/${e.cpus} · ${e.cpu.toFixed(0)}%`,"nbc-cpu")),o("td",{},y(p.map(u=>u[0]),100)),o("td",{},e.gpus?l((e.gpus-e.gpus_free)/e.gpus,`${e.gpus-e.gpus_free}/${e.gpus}`):"–"),o("td",{},l(e.mem_total?e.mem_used/e.mem_total:0,`${d(e.mem_used)} / ${d(e.mem_total)}`,"nbc-mem")),o("td",{},l(e.store_capacity?e.store_used/e.store_capacity:0,`${d(e.store_used)} / ${d(e.store_capacity)}`,"nbc-store")),o("td",{class:"nbc-workers"},String(e.workers)),o("td",{},h||"–")))}s.append(i);let c=r.filter(e=>e.alive).length;t.replaceChildren(o("div",{class:"nbc-title"},`Cluster: ${c} node${c===1?"":"s"} alive`),s),t.dataset.nodes=String(c)}function w({model:t,el:a}){f("nbc-base-css",m),f("nbc-cluster-css",x);let r=o("div",{class:"nbc-widget nbc-cluster"});return a.append(r),g(t,()=>{},n=>S(r,n))}var _={render:w};export{_ as default,l as meter};
